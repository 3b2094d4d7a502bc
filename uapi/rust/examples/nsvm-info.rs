// SPDX-License-Identifier: MIT

//! Prints every nsvm device and what GET_PARAM reports of it.

use nsvm_uapi::{param_name, render_devices, sys};

fn main() {
    let devs = match render_devices() {
        Ok(d) if !d.is_empty() => d,
        Ok(_) => {
            eprintln!("nsvm-info: no nsvm device (is nsvm.ko loaded?)");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("nsvm-info: {e}");
            std::process::exit(1);
        }
    };
    for dev in devs {
        let v = match dev.version() {
            Ok(v) => v,
            Err(e) => {
                eprintln!("nsvm-info: {}: {e}", dev.path().display());
                std::process::exit(1);
            }
        };
        println!(
            "{}: {} {}.{}.{} \"{}\"",
            dev.path().display(),
            v.name,
            v.number.0,
            v.number.1,
            v.number.2,
            v.desc
        );
        for param in 0..sys::DRM_NSVM_PARAM_COUNT {
            match dev.get_param(param) {
                Ok(val) => println!("  {:<14} {}", param_name(param), show(param, val)),
                Err(e) => println!("  {:<14} error: {e}", param_name(param)),
            }
        }
    }
}

/// A param's value as a person reads it.
fn show(param: sys::drm_nsvm_param, val: u64) -> String {
    match param {
        sys::DRM_NSVM_PARAM_UAPI_VERSION => format!("{}.{}", val >> 16, val & 0xffff),
        sys::DRM_NSVM_PARAM_FEATURES => format!("{val:#x}"),
        sys::DRM_NSVM_PARAM_PAGE_SIZES => (0..64)
            .filter(|b| val & (1 << b) != 0)
            .map(|b| match b {
                0..=9 => format!("{}B", 1u64 << b),
                10..=19 => format!("{}K", 1u64 << (b - 10)),
                20..=29 => format!("{}M", 1u64 << (b - 20)),
                _ => format!("{}G", 1u64 << (b - 30)),
            })
            .collect::<Vec<_>>()
            .join("|"),
        sys::DRM_NSVM_PARAM_VRAM_SIZE => format!("{} MiB", val >> 20),
        _ => val.to_string(),
    }
}
