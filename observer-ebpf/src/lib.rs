//! Present only so `observer` can name this crate as a build-dependency (cargo then rebuilds the
//! daemon when these sources change). The programs are the `observer` binary target.
#![no_std]
