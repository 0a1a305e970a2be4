//! The Mesos-DNS HTTP API (`/v1/hosts/{host}`, `/v1/services/{service}`, `/v1/enumerate`,
//! `/v1/axfr`), answered from the published `Records`.
