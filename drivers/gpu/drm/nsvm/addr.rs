// SPDX-License-Identifier: GPL-2.0

//! User address ranges at the ioctl boundary.
//!
//! Every address and length userspace passes (MIGRATE and SET_ATTR
//! ranges, SNAPSHOT's pages, each operand of each EXEC command) is checked
//! against the mirror's user address limit (`TASK_SIZE` of its address
//! space, below `2^VA_BITS` as GET_PARAM reports) before any arithmetic is
//! done on it: a range reaching past the limit, or past 2^64, is `EINVAL`.
//! Inside the driver every address is then below the limit, which is page
//! aligned and far from the top of the 64-bit space, so window and block
//! ends computed from them neither wrap nor need saturating at an
//! unaligned value.

use kernel::prelude::*;

use crate::gpu::PAGE_SIZE_4K;

/// The end of `[start, start + len)` if the range lies below `limit`;
/// `EINVAL` if any of it lies at or above it (or the sum wraps). `start +
/// len` is computed only once it is known not to exceed `limit`.
pub(crate) fn range_end(start: u64, len: u64, limit: usize) -> Result<usize> {
    let limit = u64::try_from(limit).map_err(|_| EINVAL)?;
    if start > limit || len > limit - start {
        return Err(EINVAL);
    }
    // OVERFLOW: `start + len <= limit`.
    usize::try_from(start + len).map_err(|_| EINVAL)
}

/// The end of the page-aligned range of `len` bytes (1 to `max`) from
/// `start`, below `limit`; `EINVAL` for anything else.
pub(crate) fn page_range(start: u64, len: u64, max: u64, limit: usize) -> Result<usize> {
    let page = PAGE_SIZE_4K as u64;
    if len == 0 || len > max || start % page != 0 || len % page != 0 {
        return Err(EINVAL);
    }
    range_end(start, len, limit)
}

/// The end of a window of `size` bytes from `start` (a power of two,
/// `start` aligned to it), clipped to `limit` (page aligned): aligned either
/// way, never past the limit, and never before `start` (a window from at or
/// above the limit is empty).
pub(crate) fn window_end(start: usize, size: usize, limit: usize) -> usize {
    start
        .checked_add(size)
        .map_or(limit, |end| end.min(limit))
        .max(start)
}

#[kunit_tests(nsvm_addr)]
mod tests {
    use super::*;

    const LIMIT: usize = (1 << 47) - PAGE_SIZE_4K;
    const PAGE: u64 = PAGE_SIZE_4K as u64;

    #[test]
    fn ranges_at_the_limit() {
        let limit = LIMIT as u64;
        assert_eq!(range_end(0, 0, LIMIT), Ok(0));
        assert_eq!(range_end(limit - PAGE, PAGE, LIMIT), Ok(LIMIT));
        assert_eq!(range_end(limit, 0, LIMIT), Ok(LIMIT));
        assert_eq!(range_end(limit - PAGE, PAGE + 1, LIMIT), Err(EINVAL));
        assert_eq!(range_end(limit, 1, LIMIT), Err(EINVAL));
        assert_eq!(range_end(limit + PAGE, 0, LIMIT), Err(EINVAL));
        // Sums that land on 2^64 or one past it.
        assert_eq!(
            range_end(u64::MAX - (2 << 20) + 1, 2 << 20, LIMIT),
            Err(EINVAL)
        );
        assert_eq!(range_end(1 << 63, 1 << 63, LIMIT), Err(EINVAL));
        assert_eq!(range_end(PAGE, u64::MAX - PAGE + 2, LIMIT), Err(EINVAL));
        assert_eq!(range_end(u64::MAX, u64::MAX, LIMIT), Err(EINVAL));
    }

    #[test]
    fn page_ranges() {
        let max = 1 << 40;
        assert_eq!(page_range(PAGE, PAGE, max, LIMIT), Ok(2 * PAGE_SIZE_4K));
        assert_eq!(page_range(PAGE, 0, max, LIMIT), Err(EINVAL));
        assert_eq!(page_range(PAGE + 1, PAGE, max, LIMIT), Err(EINVAL));
        assert_eq!(page_range(PAGE, PAGE - 1, max, LIMIT), Err(EINVAL));
        assert_eq!(page_range(0, max + PAGE, max, LIMIT), Err(EINVAL));
        assert_eq!(
            page_range(0xffff_ffff_ffe0_0000, PAGE, max, LIMIT),
            Err(EINVAL)
        );
    }

    #[test]
    fn windows_stay_aligned() {
        let mb2 = 2 << 20;
        assert_eq!(window_end(0, mb2, LIMIT), mb2);
        // The last window ends at the limit, not past it.
        let last = LIMIT & !(mb2 - 1);
        assert_eq!(window_end(last, mb2, LIMIT), LIMIT);
        // Nothing wraps to an unaligned end at the top of the space: a
        // window past the limit is empty.
        let top = usize::MAX & !(mb2 - 1);
        assert_eq!(window_end(top, mb2, LIMIT), top);
        assert_eq!(window_end(LIMIT, PAGE_SIZE_4K, LIMIT), LIMIT);
    }
}
