package testenv

import "net/http"

// OperatorPassword is the OPERATOR_PASSWORD of every orderd the tests configure through
// Env.Getenv (and so of the child processes built from it).
const OperatorPassword = "test-operator-password"

// AsOperator adds the operator's credentials (HTTP Basic, user "operator") to r and returns it.
func AsOperator(r *http.Request) *http.Request {
	r.SetBasicAuth("operator", OperatorPassword)
	return r
}

// OperatorGet is http.Get with the operator's credentials: for the dashboard, its API,
// /metrics and orders by plain id.
func OperatorGet(url string) (*http.Response, error) {
	r, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	return http.DefaultClient.Do(AsOperator(r))
}
