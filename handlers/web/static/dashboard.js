// The orderd dashboard: polls the JSON endpoints every second and redraws. No framework,
// no build step. Everything shown comes from /api/dashboard/* and the API's own
// GET /orders/{id} and GET /orders/{id}/events; orders are placed with POST /orders.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const POLL_MS = 1000;
const PAGE = 15;
const state = { status: "all", before: [], cursor: 0, next: null, selected: null, stock: {} };

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

const money = (cents) => (cents / 100).toLocaleString(undefined, { style: "currency", currency: "USD" });
const label = (s) => (s || "").replace(/_/g, " ");
const badge = (s, text) => el("span", { class: "badge " + s, "data-status": s, text: text || label(s) });

// stage is one step of an order in the list: its name, coloured by how it went.
const stage = (name, status) => el("span", { class: "badge stage " + status, "data-stage": name, "data-status": status, title: name + ": " + label(status), text: name });

function ago(iso) {
  const s = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (s < 1) return "just now";
  if (s < 60) return Math.floor(s) + "s ago";
  if (s < 3600) return Math.floor(s / 60) + "m ago";
  if (s < 86400) return Math.floor(s / 3600) + "h ago";
  return new Date(iso).toLocaleString();
}

function duration(sec) {
  if (sec < 1) return Math.round(sec * 1000) + " ms";
  if (sec < 120) return sec.toFixed(1) + " s";
  return Math.round(sec / 60) + " min";
}

async function getJSON(url) {
  const res = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error((body.error && body.error.message) || res.status + " " + res.statusText);
  return body;
}

function replaceRows(tbody, rows, cols, emptyText) {
  tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colSpan: cols, class: "empty", text: emptyText }))]));
}

// --- orders list -------------------------------------------------------------------

function ordersURL() {
  const p = new URLSearchParams({ status: state.status, limit: PAGE });
  const before = state.before[state.cursor];
  if (before) p.set("before", before);
  return "/api/dashboard/orders?" + p;
}

function itemsText(items) {
  return (items || []).map((i) => i.quantity + "× " + ((state.stock[i.sku] && state.stock[i.sku].name) || i.sku)).join(", ") || "—";
}

function renderOrders(data) {
  for (const b of document.querySelectorAll("#filters button")) {
    $(".count", b).textContent = data.counts[b.dataset.status] ?? 0;
  }
  const rows = data.orders.map((o) => {
    const status = el("td", {}, badge(o.orderStatus));
    if (o.stuck) status.append(" ", badge("stuck", "stuck"));
    else if (o.slow) status.append(" ", badge("slow", "slow"));
    if (o.stuck) status.title = "Dead-lettered: " + o.stuck;
    const tr = el("tr", { "data-id": o.orderId, class: o.orderId === state.selected ? "selected" : "" },
      el("td", { text: o.orderId }),
      el("td", {}, o.customerName || el("span", { class: "muted", text: "(no name)" }), el("div", { class: "muted", text: o.customerEmail })),
      el("td", { class: "items", text: itemsText(o.items), title: itemsText(o.items) }),
      el("td", { class: "num", text: money(o.totalCents) }),
      status,
      el("td", { class: "stages" }, ...data.stages.map((s) => stage(s.label, o.stages[s.component] || "unknown"))),
      el("td", { class: "muted nowrap", text: ago(o.updatedAt), title: new Date(o.updatedAt).toLocaleString() }));
    tr.addEventListener("click", () => openOrder(o.orderId));
    return tr;
  });
  replaceRows($("#orders"), rows, 7, state.status === "all" ? "no orders yet — place one on the left" : "no " + label(state.status) + " orders");
  state.next = data.next;
  $("#older").disabled = !data.next;
  $("#newer").disabled = state.cursor === 0;
  $("#page-info").textContent = "page " + (state.cursor + 1);
}

function setFilter(status) {
  state.status = status;
  state.before = [];
  state.cursor = 0;
  for (const b of document.querySelectorAll("#filters button")) b.classList.toggle("active", b.dataset.status === status);
  refresh();
}

// --- one order and its timeline ---------------------------------------------------------

const GOOD = new Set(["PaymentCompleted", "InventoryReserved", "EmailSent"]);
const BAD = new Set(["PaymentFailed", "InventoryReservationFailed", "PaymentRefunded", "EmailFailed"]);

function openOrder(id) {
  state.selected = id;
  $("#detail").hidden = false;
  $("#detail").dataset.orderId = id;
  $("#detail-id").textContent = "#" + id;
  for (const tr of document.querySelectorAll("#orders tr")) tr.classList.toggle("selected", Number(tr.dataset.id) === id);
  refreshDetail();
}

async function refreshDetail() {
  const id = state.selected;
  if (!id) return;
  const [order, events] = await Promise.all([getJSON("/orders/" + id), getJSON("/orders/" + id + "/events")]);
  if (state.selected !== id) return;
  const st = $("#detail-status");
  st.className = "badge " + order.order_status;
  st.dataset.status = order.order_status;
  st.textContent = label(order.order_status);
  const cell = (name, value) => el("div", {}, el("span", { class: "k", text: name }), value);
  $("#detail-summary").replaceChildren(
    cell("customer", order.customer_name || "(no name)"),
    cell("email", order.customer_email || "—"),
    cell("total", money(order.total_cents)),
    cell("placed", new Date(order.placed_at).toLocaleString()),
    cell("payment", badge(order.payment_status)),
    cell("inventory", badge(order.inventory_status)),
    cell("email sent", order.email_sent ? badge("sent", "yes") : order.email_failed ? badge("failed", "refused") : badge("pending", "not yet")),
    cell("version", String(order.version)));
  const stuck = $("#detail-stuck");
  stuck.hidden = !order.stuck;
  if (order.stuck) {
    stuck.textContent = "Stuck: " + order.stuck.event + " was dead-lettered on " + order.stuck.queue + ": " + order.stuck.reason + " — " + order.stuck.fix;
  } else if (order.failure_reason) {
    stuck.hidden = false;
    stuck.textContent = "Failure: " + order.failure_reason;
  }
  const items = events.events.map((e) => el("li", { class: GOOD.has(e.type) ? "good" : BAD.has(e.type) ? "bad" : "", "data-type": e.type },
    el("div", { class: "ev-head" },
      el("span", { class: "ev-type", text: e.type }),
      el("span", { class: "ev-time", text: new Date(e.occurredAt).toLocaleTimeString(undefined, { hour12: false }) + "." + String(new Date(e.occurredAt).getMilliseconds()).padStart(3, "0") + " · v" + e.version + " · position " + e.position })),
    el("div", { class: "ev-ids" }, "correlation ", el("code", { text: e.metadata.correlationId || "—" }), " · caused by ", el("code", { text: e.metadata.causationId || "—" })),
    el("pre", { text: JSON.stringify(e.data) })));
  $("#timeline").replaceChildren(...items);
}

// --- stock, dead letters, lag -----------------------------------------------------------

function renderStock(data) {
  state.stock = Object.fromEntries(data.stock.map((s) => [s.sku, s]));
  replaceRows($("#stock"), data.stock.map((s) => el("tr", { "data-sku": s.sku },
    el("td", {}, s.name, el("code", { class: "sub", text: s.sku })), el("td", { class: "num", text: money(s.priceCents) }),
    el("td", { class: "num" + (s.available < 20 ? " low" : ""), text: s.available.toLocaleString() }),
    el("td", { class: "num", text: s.reserved.toLocaleString() }))), 4, "no stock");
  updateTotal();
}

function renderDeadLetters(data) {
  replaceRows($("#dead-letters"), data.deadLetters.map((d) => {
    const order = d.orderId ? el("a", { href: "#", text: "#" + d.orderId }) : el("span", { class: "muted", text: "—" });
    if (d.orderId) order.addEventListener("click", (ev) => { ev.preventDefault(); openOrder(d.orderId); });
    return el("tr", {}, el("td", {}, order), el("td", { text: d.queue }), el("td", { text: d.eventType }),
      el("td", { text: d.reason }), el("td", { class: "muted", text: ago(d.deadAt) }),
      el("td", {}, d.holding ? badge("stuck", "yes") : el("span", { class: "muted", text: "moved on" })));
  }), 6, "none — every message was handled");
  const v = $("#lag-dead");
  v.textContent = data.total;
  v.className = "value" + (data.total > 0 ? " bad" : "");
}

function renderLag(data) {
  const o = data.outbox, p = data.projection;
  $("#lag-outbox").textContent = o.waiting;
  const oldest = $("#lag-oldest");
  oldest.textContent = o.waiting ? duration(o.oldestAgeSeconds) : "—";
  oldest.className = "value" + (o.oldestAgeSeconds > 30 ? " bad" : o.oldestAgeSeconds > 5 ? " warn" : "");
  $("#lag-log").textContent = p.logPosition.toLocaleString();
  const behind = $("#lag-projection");
  behind.textContent = p.eventsBehind === null ? "rebuilding" : p.eventsBehind + " events";
  behind.className = "value" + (p.eventsBehind === null || p.eventsBehind > 0 ? " warn" : "");
  replaceRows($("#outbox"), o.queues.map((q) => el("tr", {}, el("td", { text: q.queue }),
    el("td", { class: "num", text: q.waiting }), el("td", { class: "num", text: duration(q.oldestAgeSeconds) }))), 3, "nothing waiting");
}

// --- polling ----------------------------------------------------------------------------

let timer = null, running = false, again = false;
async function refresh() {
  if (running) { again = true; return; }
  running = true;
  clearTimeout(timer);
  const live = $("#live");
  try {
    const [orders, stock, dead, lag] = await Promise.all([getJSON(ordersURL()), getJSON("/api/dashboard/stock"),
      getJSON("/api/dashboard/dead-letters"), getJSON("/api/dashboard/lag")]);
    renderStock(stock);
    renderOrders(orders);
    renderDeadLetters(dead);
    renderLag(lag);
    await refreshDetail();
    live.className = "live";
    live.textContent = "● live";
  } catch (err) {
    live.className = "live down";
    live.textContent = "● " + err.message;
  } finally {
    running = false;
  }
  if (again) { again = false; return refresh(); }
  timer = setTimeout(refresh, document.hidden ? 5 * POLL_MS : POLL_MS);
}

// --- the order form ---------------------------------------------------------------------

function updateTotal() {
  let cents = 0;
  for (const line of document.querySelectorAll("#item-lines .item-line")) {
    const opt = $(".item-sku", line).selectedOptions[0];
    cents += (opt ? Number(opt.dataset.price) : 0) * (Number($(".item-qty", line).value) || 0);
  }
  $("#form-total").textContent = "Total " + money(cents);
}

function addLine() {
  const line = $("#item-line-template").content.firstElementChild.cloneNode(true);
  $("#item-lines").append(line);
  updateTotal();
}

async function placeOrder(ev) {
  ev.preventDefault();
  const msg = $("#form-message");
  const items = [...document.querySelectorAll("#item-lines .item-line")].map((line) => ({
    sku: $(".item-sku", line).value, quantity: Number($(".item-qty", line).value),
  }));
  const body = { customerName: $("#customer-name").value.trim(), customerEmail: $("#customer-email").value.trim(), items };
  const button = $("#place-submit");
  button.disabled = true;
  msg.className = "form-message";
  msg.textContent = "placing…";
  try {
    const res = await fetch("/orders", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Idempotency-Key": crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random() },
      body: JSON.stringify(body),
    });
    const out = await res.json().catch(() => ({}));
    if (!res.ok) {
      const e = out.error || {};
      throw new Error((e.field ? e.field + " " : "") + (e.message || res.statusText));
    }
    msg.className = "form-message ok";
    msg.textContent = "Order #" + out.orderId + " placed — watch it below.";
    setFilter("all");
    openOrder(out.orderId);
  } catch (err) {
    msg.className = "form-message error";
    msg.textContent = "Not placed: " + err.message;
  } finally {
    button.disabled = false;
  }
}

$("#place-form").addEventListener("submit", placeOrder);
$("#add-line").addEventListener("click", addLine);
$("#item-lines").addEventListener("click", (ev) => {
  if (ev.target.classList.contains("remove-line") && document.querySelectorAll("#item-lines .item-line").length > 1) {
    ev.target.closest(".item-line").remove();
    updateTotal();
  }
});
$("#item-lines").addEventListener("input", updateTotal);
for (const b of document.querySelectorAll("#filters button")) b.addEventListener("click", () => setFilter(b.dataset.status));
$("#older").addEventListener("click", () => {
  if (!state.next) return;
  state.before[state.cursor + 1] = state.next;
  state.cursor++;
  refresh();
});
$("#newer").addEventListener("click", () => { if (state.cursor > 0) { state.cursor--; refresh(); } });
$("#detail-close").addEventListener("click", () => {
  state.selected = null;
  $("#detail").hidden = true;
  for (const tr of document.querySelectorAll("#orders tr.selected")) tr.classList.remove("selected");
});
document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
updateTotal();
refresh();
