//! Maps what went wrong to the [`Class`] an operator reads. The distinctions matter:
//! refused means nobody listened, reset means a process dropped a connection it had
//! accepted, timeout means something held the request.

use crate::Class;
use hyper::StatusCode;
use std::error::Error as StdError;
use std::io;

pub(crate) fn status(s: StatusCode) -> Class {
    match s.as_u16() {
        200..=299 => Class::Ok,
        400..=499 => Class::Http4xx,
        500 => Class::Http500,
        502 => Class::Http502,
        503 => Class::Http503,
        504 => Class::Http504,
        _ => Class::Other,
    }
}

/// A failed TCP connect.
pub(crate) fn connect(e: &io::Error) -> Class {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Class::Refused,
        io::ErrorKind::TimedOut => Class::Timeout,
        k if is_reset(k) => Class::Reset,
        _ => Class::Other,
    }
}

/// An error on an established connection, before the response head was complete.
pub(crate) fn established(e: &hyper::Error) -> Class {
    if e.is_incomplete_message() || e.is_canceled() || e.is_closed() || e.is_body_write_aborted() {
        return Class::Reset;
    }
    match find_io(e).map(io::Error::kind) {
        Some(k) if is_reset(k) => Class::Reset,
        Some(io::ErrorKind::TimedOut) => Class::Timeout,
        _ => Class::Other,
    }
}

fn is_reset(k: io::ErrorKind) -> bool {
    matches!(
        k,
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

/// hyper wraps io errors (sometimes twice), so the kind is found by walking the chain.
fn find_io<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a io::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return Some(io);
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let cases = [(200, Class::Ok), (202, Class::Ok), (404, Class::Http4xx), (429, Class::Http4xx)];
        for (code, class) in cases {
            assert_eq!(status(StatusCode::from_u16(code).unwrap()), class);
        }
        for (code, class) in
            [(500, Class::Http500), (502, Class::Http502), (503, Class::Http503), (504, Class::Http504)]
        {
            assert_eq!(status(StatusCode::from_u16(code).unwrap()), class);
        }
        assert_eq!(status(StatusCode::from_u16(501).unwrap()), Class::Other);
        assert_eq!(status(StatusCode::from_u16(302).unwrap()), Class::Other);
    }

    #[test]
    fn connect_errors() {
        let e = |k| io::Error::from(k);
        assert_eq!(connect(&e(io::ErrorKind::ConnectionRefused)), Class::Refused);
        assert_eq!(connect(&e(io::ErrorKind::TimedOut)), Class::Timeout);
        assert_eq!(connect(&e(io::ErrorKind::ConnectionReset)), Class::Reset);
        assert_eq!(connect(&e(io::ErrorKind::AddrNotAvailable)), Class::Other);
    }

    #[test]
    fn io_kind_found_through_wrappers() {
        #[derive(Debug)]
        struct Wrap(io::Error);
        impl std::fmt::Display for Wrap {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("wrapped")
            }
        }
        impl StdError for Wrap {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let w = Wrap(io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(find_io(&w).map(io::Error::kind), Some(io::ErrorKind::ConnectionReset));
    }
}
