// Package deploy holds the AWS SAM template that runs the order pipeline's stages as Lambda
// functions (template.yaml); its tests check the template's wiring and IAM against the code.
package deploy

import _ "embed"

// Template is the SAM template, as `sam build` reads it.
//
//go:embed template.yaml
var Template []byte
