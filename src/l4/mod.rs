//! The user-space L4 load balancer: TCP and UDP listeners on VIPs (addresses on `l4.link`) and on
//! Marathon service ports (`l4.bind`), reconciled from each snapshot by diff.
