//! Passing an open file over the control socket (SCM_RIGHTS).
//!
//! Files a client names (download targets) are opened by the client, with its own
//! rights, and handed to the daemon as a descriptor: the daemon never opens a path on
//! a client's behalf, so nobody can make it write where they could not.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use tokio::io::Interest;
use tokio::net::UnixStream;

/// The byte that carries the descriptor.
const MARKER: u8 = b'F';

/// Sends `file` to the peer as one byte with the descriptor attached.
pub async fn send_file(stream: &UnixStream, file: BorrowedFd<'_>) -> io::Result<()> {
    let fds = [file.as_raw_fd()];
    let sent = stream
        .async_io(Interest::WRITABLE, || {
            sendmsg::<()>(
                stream.as_raw_fd(),
                &[IoSlice::new(&[MARKER])],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(io::Error::from)
        })
        .await?;
    match sent {
        1 => Ok(()),
        _ => Err(io::Error::other("the file descriptor was not sent")),
    }
}

/// Receives the descriptor the peer sends with [`send_file`]. Anything else (no
/// descriptor, several, a closed connection) is an error, and every descriptor that
/// came is closed.
pub async fn receive_file(stream: &UnixStream) -> io::Result<OwnedFd> {
    loop {
        stream.readable().await?;
        let mut byte = [0u8; 1];
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let received = stream.try_io(Interest::READABLE, || {
            let mut iov = [IoSliceMut::new(&mut byte)];
            let message = recvmsg::<()>(
                stream.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(io::Error::from)?;
            let mut fds: Vec<OwnedFd> = Vec::new();
            for cmsg in message.cmsgs().map_err(io::Error::from)? {
                if let ControlMessageOwned::ScmRights(raw) = cmsg {
                    // SAFETY: the kernel just installed these descriptors in this
                    // process for us; nothing else owns them.
                    fds.extend(
                        raw.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
            let truncated = message.flags.contains(MsgFlags::MSG_CTRUNC);
            Ok((message.bytes, fds, truncated))
        });
        let (bytes, mut fds, truncated) = match received {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => other?,
        };
        return match (bytes, fds.len(), truncated) {
            (0, _, _) => Err(io::Error::other("the client left before sending its file")),
            (1, 1, false) if byte[0] == MARKER => Ok(fds.remove(0)),
            _ => Err(io::Error::other(
                "expected exactly one file descriptor from the client",
            )),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsFd;

    #[tokio::test]
    async fn a_file_crosses_the_socket_and_garbage_does_not() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"hello").unwrap();
        send_file(&a, file.as_fd()).await.unwrap();
        let mut received = std::fs::File::from(receive_file(&b).await.unwrap());
        received.rewind().unwrap();
        let mut text = String::new();
        received.read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello");

        // A plain byte without a descriptor is refused.
        a.try_write(b"F").unwrap();
        let err = receive_file(&b).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "expected exactly one file descriptor from the client"
        );
        drop(a);
        let err = receive_file(&b).await.unwrap_err();
        assert_eq!(err.to_string(), "the client left before sending its file");
    }
}
