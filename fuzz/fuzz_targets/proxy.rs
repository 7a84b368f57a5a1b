//! The PROXY v2 header reader. The first input byte chooses how many bytes
//! each read returns (1..=16, or all), the rest is the stream. On success
//! the reader has consumed exactly the header (16 bytes plus its length
//! field) and left the SMTP bytes after it untouched.
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll};

use libfuzzer_sys::fuzz_target;
use schleuse::listener::proxy::{MAX_HEADER_LEN, read_header};
use tokio::io::{AsyncRead, ReadBuf};

/// A stream that hands out at most `chunk` bytes per read.
struct Trickle<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.data.len().min(self.chunk).min(buf.remaining());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let chunk = match first % 17 {
        0 => usize::MAX,
        n => usize::from(n),
    };
    let mut reader = Trickle {
        data: stream,
        chunk,
    };
    let result = schleuse_fuzz::runtime().block_on(read_header(&mut reader));
    if result.is_ok() {
        let consumed = stream.len() - reader.data.len();
        let declared = 16 + usize::from(u16::from_be_bytes([stream[14], stream[15]]));
        assert_eq!(consumed, declared, "read past or short of the header");
        assert!(consumed <= MAX_HEADER_LEN);
    }
});
