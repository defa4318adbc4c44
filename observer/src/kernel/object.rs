//! The eBPF object embedded at build time by `build.rs`.

/// The object, or an error when this binary was built without a BPF toolchain (stub object).
pub fn bytes() -> Result<&'static [u8], super::ProbeError> {
    static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/observer"));
    if OBJECT.is_empty() {
        return Err(super::ProbeError::StubObject);
    }
    Ok(OBJECT)
}
