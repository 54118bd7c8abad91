//! netd keeps CAP_NET_ADMIN and nothing else. It runs as uid 0 so the `nft`
//! and `ip` it executes are root too, and a root exec gets the bounding set
//! as its permitted set: with the bounding set cut to CAP_NET_ADMIN, netd's
//! children hold exactly that as well.

use caps::{CapSet, Capability, CapsHashSet};

#[derive(Debug, thiserror::Error)]
pub enum PrivsError {
    #[error("purple-netd must run as root (uid 0), it runs as uid {0}")]
    NotRoot(u32),
    #[error("purple-netd needs CAP_NET_ADMIN and was started without it")]
    NoNetAdmin,
    #[error("{step} ({set}): {source}")]
    Caps {
        step: &'static str,
        set: &'static str,
        source: caps::errors::CapsError,
    },
    #[error("after dropping, the {set} set is {got}, expected only CAP_NET_ADMIN")]
    Leftover { set: &'static str, got: String },
}

pub const KEPT: Capability = Capability::CAP_NET_ADMIN;

fn caps_err(
    step: &'static str,
    set: &'static str,
) -> impl FnOnce(caps::errors::CapsError) -> PrivsError {
    move |source| PrivsError::Caps { step, set, source }
}

fn describe(set: &CapsHashSet) -> String {
    let mut names: Vec<String> = set.iter().map(|c| c.to_string()).collect();
    names.sort();
    if names.is_empty() {
        "empty".into()
    } else {
        names.join(",")
    }
}

/// Drops every capability but CAP_NET_ADMIN from all five sets and returns
/// a line saying what is left, for the log.
pub fn drop_to_net_admin() -> Result<String, PrivsError> {
    let uid = nix::unistd::getuid().as_raw();
    if uid != 0 || nix::unistd::geteuid().as_raw() != 0 {
        return Err(PrivsError::NotRoot(uid));
    }
    let permitted = caps::read(None, CapSet::Permitted).map_err(caps_err("read", "permitted"))?;
    if !permitted.contains(&KEPT) {
        return Err(PrivsError::NoNetAdmin);
    }
    // The bounding set first: shrinking it needs CAP_SETPCAP, which goes
    // with the effective set below. Only what is in it is dropped: under a
    // service manager that already cut it to CAP_NET_ADMIN (the packaged
    // unit does) there is no CAP_SETPCAP, and the kernel refuses even a
    // drop that would change nothing.
    let bounding = caps::read(None, CapSet::Bounding).map_err(caps_err("read", "bounding"))?;
    for cap in bounding {
        if cap != KEPT {
            caps::drop(None, CapSet::Bounding, cap).map_err(caps_err("drop", "bounding"))?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(caps_err("clear", "ambient"))?;
    let keep: CapsHashSet = [KEPT].into_iter().collect();
    caps::set(None, CapSet::Inheritable, &keep).map_err(caps_err("set", "inheritable"))?;
    // Effective before permitted: effective must stay a subset of permitted.
    caps::set(None, CapSet::Effective, &keep).map_err(caps_err("set", "effective"))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(caps_err("set", "permitted"))?;
    let mut line = Vec::new();
    for (set, name) in [
        (CapSet::Bounding, "bounding"),
        (CapSet::Permitted, "permitted"),
        (CapSet::Effective, "effective"),
        (CapSet::Inheritable, "inheritable"),
        (CapSet::Ambient, "ambient"),
    ] {
        let got = caps::read(None, set).map_err(caps_err("read back", name))?;
        let expected_empty = matches!(set, CapSet::Ambient);
        let ok = if expected_empty {
            got.is_empty()
        } else {
            got == keep
        };
        if !ok {
            return Err(PrivsError::Leftover {
                set: name,
                got: describe(&got),
            });
        }
        line.push(format!("{name}={}", describe(&got)));
    }
    Ok(line.join(" "))
}
