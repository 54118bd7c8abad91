//! The channel between purple-init and the sandbox's first process for a
//! filtered network: the child sends its network namespace (purple-init
//! cannot open another process's namespace files once that process is not
//! dumpable and has other ids), purple-init answers with the address
//! purple-netd chose. A SOCK_SEQPACKET pair: each message arrives whole.

use std::io::{IoSlice, IoSliceMut};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use purple_common::netd::Attachment;

/// What the child configures on its end of the veth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    pub interface: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
}

/// Longest message: 4 + 1 + 4 address bytes and a name of at most 15.
const MAX_MESSAGE: usize = 32;

pub fn pair() -> Result<(OwnedFd, OwnedFd), Errno> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
}

/// Child: sends its own network namespace.
pub fn send_netns(channel: &OwnedFd) -> Result<(), Errno> {
    let netns = nix::fcntl::open(
        "/proc/thread-self/ns/net",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    let netns = unsafe { OwnedFd::from_raw_fd(netns) };
    let fds = [netns.as_raw_fd()];
    sendmsg::<()>(
        channel.as_raw_fd(),
        &[IoSlice::new(b"N")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map(drop)
}

/// purple-init: the child's network namespace. EOF (the child died) is
/// ECONNRESET.
pub fn receive_netns(channel: &OwnedFd) -> Result<OwnedFd, Errno> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = loop {
        match recvmsg::<()>(
            channel.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(Errno::EINTR) => continue,
            other => break other?,
        }
    };
    let mut received: Option<OwnedFd> = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel just installed this descriptor for us;
                // nothing else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if received.is_none() {
                    received = Some(owned);
                }
            }
        }
    }
    if msg.bytes == 0 {
        return Err(Errno::ECONNRESET);
    }
    received.ok_or(Errno::EBADMSG)
}

fn encode(attachment: &Attachment) -> Result<Vec<u8>, Errno> {
    let name = attachment.sandbox_interface.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(Errno::EINVAL);
    }
    let mut message = Vec::with_capacity(MAX_MESSAGE);
    message.extend_from_slice(&attachment.address.octets());
    message.push(attachment.prefix_len);
    message.extend_from_slice(&attachment.gateway.octets());
    message.extend_from_slice(name);
    Ok(message)
}

fn decode(message: &[u8]) -> Option<InterfaceConfig> {
    let address: [u8; 4] = message.get(..4)?.try_into().ok()?;
    let prefix_len = *message.get(4)?;
    let gateway: [u8; 4] = message.get(5..9)?.try_into().ok()?;
    let name = std::str::from_utf8(message.get(9..)?).ok()?;
    (prefix_len <= 32 && !name.is_empty()).then(|| InterfaceConfig {
        interface: name.to_owned(),
        address: Ipv4Addr::from(address),
        prefix_len,
        gateway: Ipv4Addr::from(gateway),
    })
}

/// purple-init: the address purple-netd chose, for the child to configure.
pub fn send_attachment(channel: &OwnedFd, attachment: &Attachment) -> Result<(), Errno> {
    let message = encode(attachment)?;
    nix::sys::socket::send(channel.as_raw_fd(), &message, MsgFlags::MSG_NOSIGNAL).map(drop)
}

/// Child: the address to configure. EOF means purple-init is gone.
pub fn receive_config(channel: &OwnedFd) -> Result<InterfaceConfig, Errno> {
    let mut buffer = [0u8; MAX_MESSAGE];
    let n = loop {
        match nix::sys::socket::recv(channel.as_raw_fd(), &mut buffer, MsgFlags::empty()) {
            Err(Errno::EINTR) => continue,
            other => break other?,
        }
    };
    if n == 0 {
        return Err(Errno::ECONNRESET);
    }
    decode(&buffer[..n]).ok_or(Errno::EBADMSG)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn the_address_crosses_the_channel_whole() {
        let (init_end, child_end) = pair().unwrap();
        let attachment = Attachment {
            host_interface: "pv0123456789ab".into(),
            sandbox_interface: "eth0".into(),
            address: Ipv4Addr::new(10, 200, 0, 2),
            prefix_len: 30,
            gateway: Ipv4Addr::new(10, 200, 0, 1),
        };
        send_attachment(&init_end, &attachment).unwrap();
        let config = receive_config(&child_end).unwrap();
        assert_eq!(
            config,
            InterfaceConfig {
                interface: "eth0".into(),
                address: attachment.address,
                prefix_len: 30,
                gateway: attachment.gateway,
            }
        );
        drop(init_end);
        assert_eq!(receive_config(&child_end), Err(Errno::ECONNRESET));
    }

    #[test]
    fn the_namespace_crosses_as_a_descriptor() {
        let (init_end, child_end) = pair().unwrap();
        send_netns(&child_end).unwrap();
        let netns = receive_netns(&init_end).unwrap();
        let ours = std::fs::metadata("/proc/thread-self/ns/net").unwrap();
        let got = nix::sys::stat::fstat(netns.as_raw_fd()).unwrap();
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&ours),
            got.st_ino as u64
        );
        drop(child_end);
        assert_eq!(receive_netns(&init_end).err(), Some(Errno::ECONNRESET));
    }
}
