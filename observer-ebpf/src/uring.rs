//! `io_uring/io_uring_complete`: a request that completed with a watched errno (an ENOSPC from an
//! io_uring write never passes through a write syscall). The record is reported as syscall
//! `io_uring`, with the request's opcode in `aux` and the path of its file when it has one.

use aya_ebpf::{EbpfContext as _, helpers::bpf_probe_read_kernel};
use observer_common::{
    config::COUNTER_FILTERED,
    event::{AUX_IO_URING_OP_UNKNOWN, HOOK_IO_URING, PATH_INCOMPLETE},
    syscall::SYS_IO_URING,
};

use crate::{
    emit::errno_of,
    kread::{dentry_ino_dev, off, path_at, ptr_at},
    maps::{admitted, bump, count_error, dev_watched, runtime},
    path::walk,
    record::{record, send},
};

/// `res` of the completion record (`long` on 5.10, `int` since).
#[inline(always)]
fn result(record: u64) -> Option<i64> {
    let at = record.wrapping_add(off!(iou_tp_res));
    if off!(iou_tp_res_size) == 8 {
        unsafe { bpf_probe_read_kernel(at as *const i64) }.ok()
    } else {
        unsafe { bpf_probe_read_kernel(at as *const i32) }
            .ok()
            .map(i64::from)
    }
}

#[inline(always)]
pub fn on_complete(ctx: &aya_ebpf::programs::TracePointContext) -> Option<()> {
    let tp = ctx.as_ptr() as u64;
    let res = result(tp)?;
    let errno = errno_of(res);
    if errno == 0 {
        return None;
    }
    let cfg = runtime()?;
    if !cfg.watches_errno(errno) {
        return None;
    }
    admitted(cfg)?;
    // The request (5.19+ records name it): its opcode and file.
    let req = if off!(iou_tp_req) != 0 {
        ptr_at(tp, off!(iou_tp_req)).unwrap_or(0)
    } else {
        0
    };
    let opcode = if req != 0 {
        let at = req.wrapping_add(off!(iou_req_opcode));
        unsafe { bpf_probe_read_kernel(at as *const u8) }
            .map(u32::from)
            .unwrap_or(AUX_IO_URING_OP_UNKNOWN)
    } else {
        AUX_IO_URING_OP_UNKNOWN
    };
    let (mnt, dentry) = ptr_at(req, off!(iou_req_file))
        .and_then(|file| path_at(file, off!(file_f_path)))
        .unwrap_or((0, 0));
    let (ino, dev) = if dentry != 0 {
        dentry_ino_dev(dentry)
    } else {
        (0, 0)
    };
    if !dev_watched(cfg, dev) {
        bump(COUNTER_FILTERED);
        return None;
    }
    count_error(SYS_IO_URING, errno, dev);
    let (buf, ev, area) = record(SYS_IO_URING, errno, res)?;
    ev.hook = HOOK_IO_URING;
    ev.aux = opcode;
    ev.ino = ino;
    ev.dev = dev;
    if dentry != 0 {
        walk(area, mnt, dentry, &mut ev.path);
    } else {
        ev.path.flags |= PATH_INCOMPLETE;
    }
    send(buf, ev)
}
