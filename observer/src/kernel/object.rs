//! The eBPF object embedded at build time by `build.rs`.

/// The object, or an error when this binary was built without a BPF toolchain (stub object).
pub fn bytes() -> Result<&'static [u8], super::ProbeError> {
    static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/observer"));
    if OBJECT.is_empty() {
        return Err(super::ProbeError::StubObject);
    }
    Ok(OBJECT)
}

#[cfg(test)]
mod tests {
    use observer_common::names::{FEXIT_SET, GLOBAL_FEATURES, GLOBAL_OFFSETS, MAPS};

    /// The names the daemon uses (observer-common) are the object's: every map, read-only
    /// global and program of the attach plan.
    #[test]
    #[cfg_attr(
        fsobs_stub_object,
        ignore = "built without bpf-linker: the embedded object is a stub"
    )]
    fn the_object_has_every_name_the_daemon_uses() {
        let bytes = super::bytes().expect("an eBPF object");
        let obj = aya_obj::Object::parse(bytes).expect("the object parses");
        for m in MAPS {
            assert!(obj.maps.contains_key(*m), "map {m} missing");
        }
        for g in [GLOBAL_OFFSETS, GLOBAL_FEATURES] {
            let sym = format!("{g}\0");
            assert!(
                bytes.windows(sym.len()).any(|w| w == sym.as_bytes()),
                "global {g} missing"
            );
        }
        let planned = super::super::plan::tracepoint_set()
            .into_iter()
            .map(|p| p.program)
            .chain(
                FEXIT_SET
                    .iter()
                    .flat_map(|f| f.variants.iter().map(|v| v.1.to_string())),
            );
        for p in planned.chain([observer_common::names::PROG_NAME_DIR.to_string()]) {
            assert!(obj.programs.contains_key(&p), "program {p} missing");
        }
    }
}
