// Starts local-aws-sqs (https://github.com/Inqnuam/local-aws-sqs), the second SQS
// implementation orderd's tests run against, so the code cannot lean on one emulator's quirks.
// scripts/services.sh installs the version pinned in package-lock.json next to a copy of
// this file in .bin/local-aws-sqs/ and runs it:
//
//   node server.js --host 127.0.0.1 --port 4101
//
// It prints one line once it listens, and exits on SIGTERM or SIGINT.
"use strict";

const { createSqsServer } = require("local-aws-sqs");

function arg(name, fallback) {
  const i = process.argv.indexOf("--" + name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const hostname = arg("host", "127.0.0.1");
const port = Number(arg("port", "4101"));
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error(`--port: ${arg("port")} is not a port number`);
  process.exit(2);
}

createSqsServer({ port, hostname }).then(
  (server) => {
    console.log(`local-aws-sqs listening on http://${hostname}:${port}`);
    const stop = () => server.close(() => process.exit(0));
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
  },
  (err) => {
    console.error(`local-aws-sqs: ${err && err.stack ? err.stack : err}`);
    process.exit(1);
  },
);
