//! Standard output that a reader going away ends quietly.
//!
//! `print!` panics when the pipe it writes to is closed (`junction status | head`: `head`
//! exits after its lines, the next write gets `EPIPE`, and Rust ignores `SIGPIPE`). The
//! reader has what it wanted, so the command's remaining output is dropped instead and
//! the command finishes as it would have: its exit status still says whether the stack
//! is healthy. Any other write error is returned.

use std::{
    error::Error,
    io::{self, Write},
};

/// An error and its causes, `: `-separated, for a person (anyhow's `{:#}`), without
/// repeating a cause whose text an outer message already quotes: many errors put their
/// source in their own message, and the AWS SDK's wrap theirs more than once.
pub fn causes<'a>(chain: impl IntoIterator<Item = &'a (dyn Error + 'static)>) -> String {
    let mut text = String::new();
    for cause in chain {
        let message = cause.to_string();
        if message.is_empty() || text.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}

/// A writer whose broken pipe ends the output, not the program.
#[derive(Debug)]
pub struct Output<W> {
    writer: W,
    closed: bool,
}

impl<W: Write> Output<W> {
    pub fn new(writer: W) -> Output<W> {
        Output {
            writer,
            closed: false,
        }
    }

    /// Writes `text` and flushes it (so a closed pipe is noticed at this write, not at
    /// exit); after the reader has gone, writes nothing.
    pub fn print(&mut self, text: &str) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        match self
            .writer
            .write_all(text.as_bytes())
            .and_then(|()| self.writer.flush())
        {
            Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            other => other,
        }
    }

    /// [`Output::print`] with a line break.
    pub fn line(&mut self, text: &str) -> io::Result<()> {
        self.print(&format!("{text}\n"))
    }

    /// True once the reader has gone.
    pub fn is_closed(&self) -> bool {
        self.closed
    }
}

impl Output<io::Stdout> {
    /// The process's standard output.
    pub fn stdout() -> Output<io::Stdout> {
        Output::new(io::stdout())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts `room` bytes, then answers like a pipe whose reader exited.
    struct Pipe {
        written: Vec<u8>,
        room: usize,
        kind: io::ErrorKind,
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.written.len() >= self.room {
                return Err(io::Error::from(self.kind));
            }
            let take = buf.len().min(self.room - self.written.len());
            self.written.extend_from_slice(&buf[..take]);
            Ok(take)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_ends_the_output_without_an_error() {
        let mut out = Output::new(Pipe {
            written: Vec::new(),
            room: 7,
            kind: io::ErrorKind::BrokenPipe,
        });
        out.line("queue").expect("the first line fits");
        assert!(!out.is_closed());
        out.line("junction-local-ingest")
            .expect("EPIPE is not an error");
        assert!(out.is_closed());
        out.line("more").expect("nothing is written any more");
        assert_eq!(out.writer.written, b"queue\nj");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("could not sign: {0}")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("a signed header is missing")]
    struct Inner;

    #[test]
    fn a_cause_already_quoted_is_not_repeated() {
        let err = anyhow::Error::new(Outer(Inner)).context("sending billing");
        assert_eq!(
            format!("{err:#}"),
            "sending billing: could not sign: a signed header is missing: a signed header is missing"
        );
        assert_eq!(
            causes(err.chain()),
            "sending billing: could not sign: a signed header is missing"
        );
    }

    #[test]
    fn other_write_errors_are_returned() {
        let mut out = Output::new(Pipe {
            written: Vec::new(),
            room: 0,
            kind: io::ErrorKind::StorageFull,
        });
        let err = out.line("queue").expect_err("a full disk is an error");
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert!(!out.is_closed());
    }
}
