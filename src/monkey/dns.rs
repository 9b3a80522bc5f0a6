//! The `getaddrinfo` hook: a host-name lookup runs on the
//! [thread pool](crate::threadpool) while only the calling greenlet parks.
//!
//! The worker gets its own copies of the name, service and hints, so a
//! caller that gives up (timed out, killed) leaves nothing dangling; a
//! result nobody collects is freed with `freeaddrinfo`. Numeric hosts
//! (an IP literal, or `AI_NUMERICHOST`) never touch the network and are
//! resolved in place.

use std::ffi::{CStr, CString};
use std::net::IpAddr;

use libc::{EAI_SYSTEM, addrinfo, c_char, c_int};

use super::{Waited, cooperative, errno, real, set_errno};
use crate::error::Error;
use crate::threadpool;

pub(super) fn keep() {
    super::keep_symbol(getaddrinfo as *const ());
}

/// A result list from libc's `getaddrinfo`, freed on drop unless taken.
struct AddrList(*mut addrinfo);

// SAFETY: the list is owned by this value alone, and `freeaddrinfo` may be
// called from any thread.
unsafe impl Send for AddrList {}

impl AddrList {
    fn into_raw(mut self) -> *mut addrinfo {
        std::mem::replace(&mut self.0, std::ptr::null_mut())
    }
}

impl Drop for AddrList {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: a list returned by getaddrinfo, freed exactly once.
            unsafe { libc::freeaddrinfo(self.0) };
        }
    }
}

/// Everything a lookup needs, owned (it moves to a worker thread).
struct Lookup {
    node: CString,
    service: Option<CString>,
    /// `ai_flags`, `ai_family`, `ai_socktype`, `ai_protocol` of the hints.
    hints: Option<[c_int; 4]>,
}

impl Lookup {
    /// libc's `getaddrinfo`: its return code, errno, and the list.
    fn run(self) -> (c_int, c_int, AddrList) {
        // SAFETY: an all-zero addrinfo is a valid "no hints" value.
        let mut h: addrinfo = unsafe { std::mem::zeroed() };
        if let Some([flags, family, socktype, protocol]) = self.hints {
            h.ai_flags = flags;
            h.ai_family = family;
            h.ai_socktype = socktype;
            h.ai_protocol = protocol;
        }
        let hints: *const addrinfo = match self.hints {
            Some(_) => &raw const h,
            None => std::ptr::null(),
        };
        let service = self
            .service
            .as_ref()
            .map_or(std::ptr::null(), |s| s.as_ptr());
        let mut out = std::ptr::null_mut();
        // SAFETY: valid C strings, hints and out-pointer, all owned here.
        let rc = unsafe { real::getaddrinfo(self.node.as_ptr(), service, hints, &raw mut out) };
        (rc, errno(), AddrList(out))
    }
}

/// Hooked `getaddrinfo(3)`.
///
/// # Safety
/// libc's contract for `getaddrinfo`.
#[unsafe(no_mangle)]
unsafe extern "C" fn getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> c_int {
    let forward = || {
        // SAFETY: the caller's arguments, unchanged.
        unsafe { real::getaddrinfo(node, service, hints, res) }
    };
    if !cooperative() || node.is_null() || res.is_null() {
        return forward();
    }
    // SAFETY: `node` is a C string (libc's contract).
    let name = unsafe { CStr::from_ptr(node) };
    // SAFETY: `hints` is null or valid (libc's contract).
    let hints =
        unsafe { hints.as_ref() }.map(|h| [h.ai_flags, h.ai_family, h.ai_socktype, h.ai_protocol]);
    let numeric = hints.is_some_and(|h| h[0] & libc::AI_NUMERICHOST != 0)
        || name
            .to_str()
            .is_ok_and(|s| s.parse::<IpAddr>().is_ok() || s.is_empty());
    if numeric {
        return forward();
    }
    let saved = errno();
    let lookup = Lookup {
        node: name.to_owned(),
        // SAFETY: `service` is null or a C string (libc's contract).
        service: (!service.is_null()).then(|| unsafe { CStr::from_ptr(service) }.to_owned()),
        hints,
    };
    super::count_park();
    match super::guarded(|| threadpool::spawn_blocking(move || lookup.run())) {
        Ok(Ok((rc, err, list))) => {
            // SAFETY: `res` is valid for writes (libc's contract).
            unsafe { *res = list.into_raw() };
            set_errno(if rc == EAI_SYSTEM { err } else { saved });
            rc
        }
        Ok(Err(Error::TimedOut)) => {
            set_errno(libc::ETIMEDOUT);
            EAI_SYSTEM
        }
        Ok(Err(Error::Deadlock)) => {
            set_errno(libc::EDEADLK);
            EAI_SYSTEM
        }
        Err(Waited::Killed) => {
            set_errno(libc::ECANCELED);
            EAI_SYSTEM
        }
        // No worker could be started: resolve here, blocking, as unpatched.
        Ok(Err(_)) | Err(_) => {
            set_errno(saved);
            forward()
        }
    }
}
