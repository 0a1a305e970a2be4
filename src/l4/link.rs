//! The VIP link (`l4.link`, default `ferryman0`): a `dummy` link, or a `bridge` where the kernel
//! has no dummy driver (as Minuteman did with its `minuteman` link), up, carrying every VIP address
//! as a host route (`/32`, `/128`) so that listeners can bind VIP:port and local clients reach them.
//!
//! All through netlink (`rtnetlink`), no `ip` command. Needs CAP_NET_ADMIN: without it every call
//! fails with [`Error::Permission`], and the caller skips VIP listeners.

use std::collections::BTreeSet;
use std::net::IpAddr;

use futures_util::TryStreamExt as _;
use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::{Handle, LinkBridge, LinkDummy, LinkUnspec};

/// errno values netlink answers with (negated in the message).
const EPERM: i32 = 1;
const ENOENT: i32 = 2;
const EEXIST: i32 = 17;
const ENODEV: i32 = 19;
const EOPNOTSUPP: i32 = 95;
const EADDRNOTAVAIL: i32 = 99;

/// Failures of link management.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No CAP_NET_ADMIN (EPERM/EACCES from the kernel).
    #[error("l4.link {link}: {op}: permission denied (needs CAP_NET_ADMIN)")]
    Permission { link: String, op: &'static str },
    #[error("l4.link {link}: {op}: {source}")]
    Netlink {
        link: String,
        op: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("l4.link: cannot open a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("l4.link {link}: the link exists but is gone or has no index")]
    Missing { link: String },
}

impl Error {
    pub fn is_permission(&self) -> bool {
        matches!(self, Error::Permission { .. })
    }
}

/// The errno of a netlink error answer (positive), if it is one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

fn wrap(link: &str, op: &'static str, source: rtnetlink::Error) -> Error {
    match errno(&source) {
        Some(EPERM) | Some(13) => Error::Permission {
            link: link.to_string(),
            op,
        },
        _ => Error::Netlink {
            link: link.to_string(),
            op,
            source,
        },
    }
}

/// Opens a netlink connection whose driver runs as a task until the handle is dropped.
fn connect() -> Result<Handle, Error> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(Error::Socket)?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Which kind of link was made (or found).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dummy,
    /// The fallback where the kernel has no dummy driver.
    Bridge,
    /// The link existed already (any kind).
    Existing,
}

// === impl Link ===

/// The VIP link, present and up.
pub struct Link {
    handle: Handle,
    name: String,
    index: u32,
    kind: Kind,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("name", &self.name)
            .field("index", &self.index)
            .field("kind", &self.kind)
            .finish()
    }
}

impl Link {
    /// Finds or creates the link `name` (type `dummy`; `bridge` when the kernel has no dummy
    /// driver, logged) and sets it up.
    pub async fn ensure(name: &str) -> Result<Link, Error> {
        let handle = connect()?;
        let (index, kind) = match index_of(&handle, name).await? {
            Some(index) => (index, Kind::Existing),
            None => {
                let kind = match handle
                    .link()
                    .add(LinkDummy::new(name).build())
                    .execute()
                    .await
                {
                    Ok(()) => Kind::Dummy,
                    // No dummy driver: "Unknown device type" (EOPNOTSUPP), or ENODEV/ENOENT on
                    // some kernels when the module cannot be loaded.
                    Err(e) if matches!(errno(&e), Some(EOPNOTSUPP | ENODEV | ENOENT)) => {
                        tracing::info!(
                            link = name,
                            "the kernel has no dummy link driver; using a bridge link for VIP addresses"
                        );
                        handle
                            .link()
                            .add(LinkBridge::new(name).build())
                            .execute()
                            .await
                            .map_err(|e| wrap(name, "create bridge link", e))?;
                        Kind::Bridge
                    }
                    Err(e) if errno(&e) == Some(EEXIST) => Kind::Existing,
                    Err(e) => return Err(wrap(name, "create dummy link", e)),
                };
                let index = index_of(&handle, name)
                    .await?
                    .ok_or_else(|| Error::Missing {
                        link: name.to_string(),
                    })?;
                (index, kind)
            }
        };
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| wrap(name, "set link up", e))?;
        tracing::info!(link = name, index, kind = ?kind, "VIP link ready");
        Ok(Link {
            handle,
            name: name.to_string(),
            index,
            kind,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The addresses on the link now.
    pub async fn addresses(&self) -> Result<BTreeSet<IpAddr>, Error> {
        let mut out = BTreeSet::new();
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.index)
            .execute();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|e| wrap(&self.name, "list addresses", e))?
        {
            if msg.header.index != self.index {
                continue;
            }
            for attr in &msg.attributes {
                if let AddressAttribute::Address(ip) = attr {
                    out.insert(*ip);
                }
            }
        }
        Ok(out)
    }

    /// Adds `ip` as a host address (`/32` or `/128`, IPv6 without duplicate address detection so
    /// that it can be bound at once). Already present: fine.
    pub async fn add(&self, ip: IpAddr) -> Result<(), Error> {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        let mut req = self.handle.address().add(self.index, ip, prefix);
        if ip.is_ipv6() {
            req.message_mut().header.flags |= AddressHeaderFlags::Nodad;
        }
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
            Err(e) => Err(wrap(&self.name, "add address", e)),
        }
    }

    /// Removes `ip` from the link. Not present: fine.
    pub async fn remove(&self, ip: IpAddr) -> Result<(), Error> {
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.index)
            .set_address_filter(ip)
            .execute();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|e| wrap(&self.name, "list addresses", e))?
        {
            if msg.header.index != self.index {
                continue;
            }
            match self.handle.address().del(msg).execute().await {
                Ok(()) => {}
                Err(e) if matches!(errno(&e), Some(EADDRNOTAVAIL | ENOENT)) => {}
                Err(e) => return Err(wrap(&self.name, "remove address", e)),
            }
        }
        Ok(())
    }

    /// Makes the link carry exactly `want`: adds the missing addresses, removes the others.
    /// Returns (added, removed).
    pub async fn sync(&self, want: &BTreeSet<IpAddr>) -> Result<(usize, usize), Error> {
        let have = self.addresses().await?;
        let mut added = 0;
        let mut removed = 0;
        for ip in want.difference(&have) {
            self.add(*ip).await?;
            added += 1;
        }
        // IPv6 link-local addresses the kernel adds itself are left alone.
        for ip in have.difference(want) {
            if let IpAddr::V6(v6) = ip
                && (v6.segments()[0] & 0xffc0) == 0xfe80
            {
                continue;
            }
            self.remove(*ip).await?;
            removed += 1;
        }
        Ok((added, removed))
    }
}

/// The index of link `name`, `None` when there is no such link.
async fn index_of(handle: &Handle, name: &str) -> Result<Option<u32>, Error> {
    let mut stream = handle.link().get().match_name(name.to_string()).execute();
    match stream.try_next().await {
        Ok(Some(msg)) => {
            let named = msg
                .attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::IfName(n) if n == name));
            Ok(named.then_some(msg.header.index))
        }
        Ok(None) => Ok(None),
        Err(e) if matches!(errno(&e), Some(ENODEV | ENOENT)) => Ok(None),
        Err(e) => Err(wrap(name, "look up link", e)),
    }
}

/// Removes the link `name` (and with it every VIP address on it). Returns whether it existed.
pub async fn remove_link(name: &str) -> Result<bool, Error> {
    let handle = connect()?;
    let Some(index) = index_of(&handle, name).await? else {
        return Ok(false);
    };
    match handle.link().del(index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if matches!(errno(&e), Some(ENODEV | ENOENT)) => Ok(false),
        Err(e) => Err(wrap(name, "remove link", e)),
    }
}
