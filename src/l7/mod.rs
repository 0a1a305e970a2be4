//! The L7 edge: HTTP/1.1, HTTP/2, WebSocket and TLS routing driven by Marathon-LB's `HAPROXY_*`
//! labels, so that apps deployed for Marathon-LB are served unchanged.
//!
//! So far only the pure groundwork exists:
//! - [`labels`]: one Marathon app's `HAPROXY_*` labels → typed per-service-port settings
//!   ([`labels::PortLabels`]), with Marathon-LB's defaults, precedence and backend naming, and
//!   errors that name the app, the label and the value.
//! - [`routes`]: one snapshot → the immutable [`routes::RouteTable`] (vhost/path router and
//!   per-service-port frontends, backends with their servers), in Marathon-LB's matching order.
//!
//! Like the rest of the data paths, this module reads the model (`model::App`) and never the
//! discovery sources.

pub mod labels;
pub mod routes;
