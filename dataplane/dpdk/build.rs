//! Finds DPDK with pkg-config (Debian's `libdpdk-dev`: 22.11 LTS or newer)
//! and compiles the C shim against its headers. No library list is written
//! here: pkg-config gives it, so another LTS release links the same way.
//! PMDs are not linked: the shared EAL loads them as plugins from its driver
//! directory at `rte_eal_init`.

fn main() {
    println!("cargo:rerun-if-changed=csrc/shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    let lib = match pkg_config::Config::new().atleast_version("22.11").probe("libdpdk") {
        Ok(lib) => lib,
        Err(e) => panic!(
            "DPDK (libdpdk >= 22.11) not found with pkg-config: {e}\n\
             install it (Debian: apt-get install libdpdk-dev pkg-config) or build without the `dpdk` feature"
        ),
    };
    let mut build = cc::Build::new();
    build.file("csrc/shim.c").warnings(true).opt_level(3);
    for p in &lib.include_paths {
        build.include(p);
    }
    // -include rte_config.h, -march=...: DPDK's headers need the flags its pkg-config file gives.
    for (k, v) in &lib.defines {
        match v {
            Some(v) => build.define(k, v.as_str()),
            None => build.define(k, None),
        };
    }
    let out = std::process::Command::new("pkg-config").args(["--cflags-only-other", "libdpdk"]).output();
    let other = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => panic!("pkg-config --cflags-only-other libdpdk failed"),
    };
    let mut words = other.split_whitespace();
    while let Some(w) = words.next() {
        if w == "-include" {
            if let Some(h) = words.next() {
                build.flag("-include").flag(h);
            }
        } else {
            build.flag(w);
        }
    }
    build.compile("flowsteer_dpdk_shim");
}
