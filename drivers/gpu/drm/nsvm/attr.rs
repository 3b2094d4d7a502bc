// SPDX-License-Identifier: GPL-2.0

//! Per-range memory policy (`DRM_IOCTL_NSVM_SET_ATTR`): where a range
//! prefers to live, whether GPU faults migrate it there, and how GPU
//! atomics on it are made atomic.
//!
//! Attributes belong to address ranges of a file, not to mappings: they
//! outlive munmap, as the uapi says. They are kept as a sorted list of
//! disjoint ranges that differ from the default.

use kernel::prelude::*;

use crate::uapi;

/// Where a range prefers to live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Location {
    /// Where it is.
    #[default]
    None,
    /// System memory.
    System,
    /// Device memory.
    Device,
}

/// How GPU atomics on system memory are made atomic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum AtomicMode {
    /// Exclusive device access to the page (`make_device_exclusive()`).
    #[default]
    Exclusive,
    /// Migrate to device memory first.
    Device,
    /// In place, atomic against the GPU only.
    System,
}

/// The policy of a range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Attr {
    /// Preferred location.
    pub(crate) preferred: Location,
    /// GPU faults migrate to `preferred` first.
    pub(crate) migrate_on_fault: bool,
    /// Atomics.
    pub(crate) atomic: AtomicMode,
}

impl Attr {
    /// The attribute `arg` asks for; `EINVAL` for unknown values.
    pub(crate) fn from_uapi(arg: &uapi::drm_nsvm_set_attr) -> Result<Self> {
        Ok(Self {
            preferred: match arg.preferred {
                uapi::DRM_NSVM_LOCATION_NONE => Location::None,
                uapi::DRM_NSVM_LOCATION_SYSTEM => Location::System,
                uapi::DRM_NSVM_LOCATION_DEVICE => Location::Device,
                _ => return Err(EINVAL),
            },
            migrate_on_fault: match arg.migrate_on_fault {
                0 => false,
                1 => true,
                _ => return Err(EINVAL),
            },
            atomic: match arg.atomic {
                uapi::DRM_NSVM_ATOMIC_EXCLUSIVE => AtomicMode::Exclusive,
                uapi::DRM_NSVM_ATOMIC_DEVICE => AtomicMode::Device,
                uapi::DRM_NSVM_ATOMIC_SYSTEM => AtomicMode::System,
                _ => return Err(EINVAL),
            },
        })
    }

    /// GPU faults migrate to device memory first.
    pub(crate) fn fault_to_device(&self) -> bool {
        self.migrate_on_fault && self.preferred == Location::Device
    }

    /// GPU faults bring device pages back to system memory first.
    pub(crate) fn fault_to_system(&self) -> bool {
        self.migrate_on_fault && self.preferred == Location::System
    }
}

/// One range with a non-default attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Range {
    start: usize,
    end: usize,
    attr: Attr,
}

/// The attributes of an address space: disjoint, sorted, non-default
/// ranges, adjacent equal ones merged.
pub(crate) struct Attrs {
    ranges: KVec<Range>,
}

impl Attrs {
    /// Everything default.
    pub(crate) fn new() -> Self {
        Self {
            ranges: KVec::new(),
        }
    }

    /// The attribute at `addr`.
    pub(crate) fn get(&self, addr: usize) -> Attr {
        let i = self.ranges.partition_point(|r| r.end <= addr);
        match self.ranges.get(i) {
            Some(r) if r.start <= addr => r.attr,
            _ => Attr::default(),
        }
    }

    /// The attribute at `addr` and the largest range `[start, end)` around
    /// it that has that attribute (`end` is `usize::MAX` past the last
    /// range).
    pub(crate) fn span(&self, addr: usize) -> (Attr, usize, usize) {
        let i = self.ranges.partition_point(|r| r.end <= addr);
        match self.ranges.get(i) {
            Some(r) if r.start <= addr => (r.attr, r.start, r.end),
            next => {
                // A default gap: between the ranges around it, which differ
                // from the default.
                let start = i.checked_sub(1).map_or(0, |p| self.ranges[p].end);
                let end = next.map_or(usize::MAX, |r| r.start);
                (Attr::default(), start, end)
            }
        }
    }

    /// Sets `[start, end)` to `attr`. `ENOSPC` beyond
    /// `DRM_NSVM_ATTR_MAX_RANGES` ranges; nothing changes on error.
    pub(crate) fn set(&mut self, start: usize, end: usize, attr: Attr) -> Result {
        if start >= end {
            return Err(EINVAL);
        }
        let mut out = KVec::with_capacity(self.ranges.len() + 2, GFP_KERNEL)?;
        let mut placed = false;
        let push = |out: &mut KVec<Range>, r: Range| -> Result {
            if r.start >= r.end || r.attr == Attr::default() {
                return Ok(());
            }
            if let Some(last) = out.last_mut() {
                if last.end == r.start && last.attr == r.attr {
                    last.end = r.end;
                    return Ok(());
                }
            }
            out.push(r, GFP_KERNEL)?;
            Ok(())
        };
        let new = Range { start, end, attr };
        for r in self.ranges.iter() {
            if r.end <= start {
                push(&mut out, *r)?;
                continue;
            }
            // The part before the new range.
            push(
                &mut out,
                Range {
                    end: r.end.min(start),
                    ..*r
                },
            )?;
            if !placed {
                push(&mut out, new)?;
                placed = true;
            }
            // The part after it.
            push(
                &mut out,
                Range {
                    start: r.start.max(end),
                    ..*r
                },
            )?;
        }
        if !placed {
            push(&mut out, new)?;
        }
        if out.len() > uapi::DRM_NSVM_ATTR_MAX_RANGES as usize {
            return Err(ENOSPC);
        }
        self.ranges = out;
        Ok(())
    }

    /// Number of non-default ranges.
    pub(crate) fn len(&self) -> usize {
        self.ranges.len()
    }
}

#[kunit_tests(nsvm_attr)]
mod tests {
    use super::*;

    const DEV: Attr = Attr {
        preferred: Location::Device,
        migrate_on_fault: true,
        atomic: AtomicMode::Device,
    };
    const SYS: Attr = Attr {
        preferred: Location::System,
        migrate_on_fault: false,
        atomic: AtomicMode::System,
    };

    #[test]
    fn set_get_split_merge() -> Result {
        let mut a = Attrs::new();
        assert_eq!(a.get(0x1000), Attr::default());
        a.set(0x1000, 0x5000, DEV)?;
        assert_eq!(a.get(0x0fff), Attr::default());
        assert_eq!(a.get(0x1000), DEV);
        assert_eq!(a.get(0x4fff), DEV);
        assert_eq!(a.get(0x5000), Attr::default());
        // Punch a hole of another attribute in the middle: three ranges.
        a.set(0x2000, 0x3000, SYS)?;
        assert_eq!(a.len(), 3);
        assert_eq!(a.get(0x1fff), DEV);
        assert_eq!(a.get(0x2000), SYS);
        assert_eq!(a.get(0x3000), DEV);
        // Back to one attribute over all: merged into one range.
        a.set(0x2000, 0x3000, DEV)?;
        assert_eq!(a.len(), 1);
        // Resetting to the default drops the range.
        a.set(0x0, 0x10000, Attr::default())?;
        assert_eq!(a.len(), 0);
        Ok(())
    }

    /// The range around an address that has its attribute: a range, the
    /// default gaps between ranges, before the first and after the last.
    #[test]
    fn span_of_address() -> Result {
        let mut a = Attrs::new();
        assert_eq!(a.span(0x1000), (Attr::default(), 0, usize::MAX));
        a.set(0x2000, 0x4000, DEV)?;
        a.set(0x4000, 0x5000, SYS)?;
        a.set(0x8000, 0x9000, DEV)?;
        assert_eq!(a.span(0x1fff), (Attr::default(), 0, 0x2000));
        assert_eq!(a.span(0x2000), (DEV, 0x2000, 0x4000));
        assert_eq!(a.span(0x3fff), (DEV, 0x2000, 0x4000));
        assert_eq!(a.span(0x4000), (SYS, 0x4000, 0x5000));
        assert_eq!(a.span(0x5000), (Attr::default(), 0x5000, 0x8000));
        assert_eq!(a.span(0x9000), (Attr::default(), 0x9000, usize::MAX));
        assert_eq!(a.span(usize::MAX), (Attr::default(), 0x9000, usize::MAX));
        Ok(())
    }

    #[test]
    fn overlap_many() -> Result {
        let mut a = Attrs::new();
        a.set(0x1000, 0x2000, DEV)?;
        a.set(0x3000, 0x4000, DEV)?;
        a.set(0x5000, 0x6000, DEV)?;
        // One range over all three and the gaps.
        a.set(0x1800, 0x5800, SYS)?;
        assert_eq!(a.len(), 3);
        assert_eq!(a.get(0x1000), DEV);
        assert_eq!(a.get(0x1800), SYS);
        assert_eq!(a.get(0x4000), SYS);
        assert_eq!(a.get(0x5800), DEV);
        assert_eq!(a.set(0x2000, 0x1000, SYS), Err(EINVAL));
        Ok(())
    }

    #[test]
    fn limit() -> Result {
        let mut a = Attrs::new();
        let max = uapi::DRM_NSVM_ATTR_MAX_RANGES as usize;
        for i in 0..max {
            a.set(i * 0x2000, i * 0x2000 + 0x1000, DEV)?;
        }
        assert_eq!(a.set(max * 0x2000, max * 0x2000 + 0x1000, DEV), Err(ENOSPC));
        assert_eq!(a.len(), max);
        Ok(())
    }
}
