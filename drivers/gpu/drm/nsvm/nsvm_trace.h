/* SPDX-License-Identifier: GPL-2.0 */
/*
 * nsvm tracepoints: GPU faults and their batches, migrations, invalidations
 * and evictions. Emitted from Rust through the wrappers in trace.c (see
 * trace.rs); read them in <tracefs>/events/nsvm/.
 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM nsvm

#if !defined(_NSVM_TRACE_H) || defined(TRACE_HEADER_MULTI_READ)
#define _NSVM_TRACE_H

#include <linux/tracepoint.h>

TRACE_EVENT(nsvm_gpu_fault,
	TP_PROTO(u64 client, u64 addr, bool write, bool atomic),
	TP_ARGS(client, addr, write, atomic),
	TP_STRUCT__entry(
		__field(u64, client)
		__field(u64, addr)
		__field(bool, write)
		__field(bool, atomic)
	),
	TP_fast_assign(
		__entry->client = client;
		__entry->addr = addr;
		__entry->write = write;
		__entry->atomic = atomic;
	),
	TP_printk("client=%llu addr=0x%llx %s%s", __entry->client, __entry->addr,
		  __entry->write ? "write" : "read",
		  __entry->atomic ? " atomic" : "")
);

TRACE_EVENT(nsvm_fault_batch,
	TP_PROTO(u64 client, u32 faults, u64 first, u64 last, int ret),
	TP_ARGS(client, faults, first, last, ret),
	TP_STRUCT__entry(
		__field(u64, client)
		__field(u32, faults)
		__field(u64, first)
		__field(u64, last)
		__field(int, ret)
	),
	TP_fast_assign(
		__entry->client = client;
		__entry->faults = faults;
		__entry->first = first;
		__entry->last = last;
		__entry->ret = ret;
	),
	TP_printk("client=%llu faults=%u first=0x%llx last=0x%llx ret=%d",
		  __entry->client, __entry->faults, __entry->first,
		  __entry->last, __entry->ret)
);

/* Why pages moved: nsvm_migrate's cause. */
#define NSVM_MIGRATE_CAUSES			\
	EM(0, "request")			\
	EMe(1, "cpu-fault")

#undef EM
#undef EMe
#define EM(a, b) { a, b },
#define EMe(a, b) { a, b }

TRACE_EVENT(nsvm_migrate,
	TP_PROTO(u32 dev, u64 start, u64 end, bool to_device, u32 cause,
		 u64 migrated, u64 failed),
	TP_ARGS(dev, start, end, to_device, cause, migrated, failed),
	TP_STRUCT__entry(
		__field(u32, dev)
		__field(u64, start)
		__field(u64, end)
		__field(bool, to_device)
		__field(u32, cause)
		__field(u64, migrated)
		__field(u64, failed)
	),
	TP_fast_assign(
		__entry->dev = dev;
		__entry->start = start;
		__entry->end = end;
		__entry->to_device = to_device;
		__entry->cause = cause;
		__entry->migrated = migrated;
		__entry->failed = failed;
	),
	TP_printk("dev=%u [0x%llx, 0x%llx) to=%s cause=%s migrated=%llu failed=%llu",
		  __entry->dev, __entry->start, __entry->end,
		  __entry->to_device ? "device" : "system",
		  __print_symbolic(__entry->cause, NSVM_MIGRATE_CAUSES),
		  __entry->migrated, __entry->failed)
);

TRACE_EVENT(nsvm_invalidate,
	TP_PROTO(u64 client, u64 start, u64 end, bool write_protect, u64 pages),
	TP_ARGS(client, start, end, write_protect, pages),
	TP_STRUCT__entry(
		__field(u64, client)
		__field(u64, start)
		__field(u64, end)
		__field(bool, write_protect)
		__field(u64, pages)
	),
	TP_fast_assign(
		__entry->client = client;
		__entry->start = start;
		__entry->end = end;
		__entry->write_protect = write_protect;
		__entry->pages = pages;
	),
	TP_printk("client=%llu [0x%llx, 0x%llx) %s pages=%llu", __entry->client,
		  __entry->start, __entry->end,
		  __entry->write_protect ? "write-protect" : "unmap",
		  __entry->pages)
);

TRACE_EVENT(nsvm_evict,
	TP_PROTO(u32 dev, u32 chunk, u64 pages, int ret),
	TP_ARGS(dev, chunk, pages, ret),
	TP_STRUCT__entry(
		__field(u32, dev)
		__field(u32, chunk)
		__field(u64, pages)
		__field(int, ret)
	),
	TP_fast_assign(
		__entry->dev = dev;
		__entry->chunk = chunk;
		__entry->pages = pages;
		__entry->ret = ret;
	),
	TP_printk("dev=%u chunk=%u pages=%llu ret=%d", __entry->dev,
		  __entry->chunk, __entry->pages, __entry->ret)
);

#endif /* _NSVM_TRACE_H */

/* This part must be outside the include guard. */
#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE nsvm_trace
#include <trace/define_trace.h>
