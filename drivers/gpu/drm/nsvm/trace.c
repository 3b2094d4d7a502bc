// SPDX-License-Identifier: GPL-2.0
/*
 * nsvm tracepoints: the definitions (CREATE_TRACE_POINTS) and the wrappers
 * Rust calls (trace_shim.h).
 */
#include <linux/types.h>

#include "trace_shim.h"

#define CREATE_TRACE_POINTS
#include "nsvm_trace.h"

void nsvm_trace_gpu_fault(unsigned long long client, unsigned long long addr,
			  _Bool write, _Bool atomic)
{
	trace_nsvm_gpu_fault(client, addr, write, atomic);
}

void nsvm_trace_fault_batch(unsigned long long client, unsigned int faults,
			    unsigned long long first, unsigned long long last,
			    int ret)
{
	trace_nsvm_fault_batch(client, faults, first, last, ret);
}

void nsvm_trace_migrate(unsigned int dev, unsigned long long start,
			unsigned long long end, _Bool to_device,
			unsigned int cause, unsigned long long migrated,
			unsigned long long failed)
{
	trace_nsvm_migrate(dev, start, end, to_device, cause, migrated, failed);
}

void nsvm_trace_invalidate(unsigned long long client, unsigned long long start,
			   unsigned long long end, _Bool write_protect,
			   unsigned long long pages)
{
	trace_nsvm_invalidate(client, start, end, write_protect, pages);
}

void nsvm_trace_evict(unsigned int dev, unsigned int chunk,
		      unsigned long long pages, int ret)
{
	trace_nsvm_evict(dev, chunk, pages, ret);
}
