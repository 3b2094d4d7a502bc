// SPDX-License-Identifier: MIT
/*
 * nsvm_c: the uapi header from C. Compiled against uapi/drm/nsvm_drm.h and
 * libdrm (drmOpen-less: the render node, drmIoctl, drmGetVersion), it
 * proves that a C runtime can use nsvm with nothing but the header:
 * version and params, SVM_INIT, a GPU job on malloc'd memory, an unserved
 * GPU fault and its address, migration, and -EINVAL for a bad size; a job
 * waiting for a sync object through libdrm's drmSyncobj*() calls; and that
 * libdrm's drmGetDevices2() finds the devices.
 *
 * Output and exit codes follow IGT (0 pass, 77 skip, 1 fail), with the
 * same --list-subtests and --run-subtest options as the Rust binaries.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <xf86drm.h>

#include "nsvm_drm.h"

/* The layout rules of the header, checked by the C compiler. */
#define CHECK_STRUCT(s)                                                        \
	_Static_assert(sizeof(struct s) % 8 == 0, #s " is not 64-bit sized"); \
	_Static_assert(_Alignof(struct s) == 8, #s " is not 64-bit aligned")
#define CHECK_SIZED(s)                                                         \
	CHECK_STRUCT(s);                                                       \
	_Static_assert(offsetof(struct s, size) == 0, #s " does not start with size")

CHECK_SIZED(drm_nsvm_get_param);
CHECK_SIZED(drm_nsvm_svm_init);
CHECK_SIZED(drm_nsvm_exec);
CHECK_SIZED(drm_nsvm_snapshot);
CHECK_SIZED(drm_nsvm_migrate);
CHECK_SIZED(drm_nsvm_set_attr);
CHECK_SIZED(drm_nsvm_queue_create);
CHECK_SIZED(drm_nsvm_queue_destroy);
CHECK_SIZED(drm_nsvm_submit);
CHECK_SIZED(drm_nsvm_wait);
CHECK_SIZED(drm_nsvm_queue_query);
CHECK_STRUCT(drm_nsvm_cmd);
CHECK_STRUCT(drm_nsvm_sync);
CHECK_STRUCT(drm_nsvm_counters);

#define PAGE 4096ul
#define EXIT_SKIP 77

static int dev_fd = -1;

static void fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	_exit(EXIT_FAILURE);
}

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond))                                                   \
			fail("%s:%d: %s failed (errno %d)", __FILE__, __LINE__, \
			     #cond, errno);                                     \
	} while (0)

/* Render node renderD<minor> if nsvm drives it (the fd), else -1. */
static int open_render_minor(int minor)
{
	char path[64];
	drmVersionPtr v;
	int fd;

	snprintf(path, sizeof(path), "/dev/dri/renderD%d", minor);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -1;
	v = drmGetVersion(fd);
	if (v && strcmp(v->name, "nsvm") == 0) {
		drmFreeVersion(v);
		return fd;
	}
	if (v)
		drmFreeVersion(v);
	close(fd);
	return -1;
}

static void skip_no_device(void)
{
	printf("Test requirement not met: no nsvm render node\n");
	fflush(stdout);
	_exit(EXIT_SKIP);
}

/* The first render node whose driver is nsvm, or skip. */
static int open_nsvm(void)
{
	for (int minor = 128; minor < 192; minor++) {
		int fd = open_render_minor(minor);

		if (fd >= 0)
			return fd;
	}
	skip_no_device();
	return -1;
}

static uint64_t get_param(int fd, __u32 param)
{
	struct drm_nsvm_get_param arg = {
		.size = sizeof(arg),
		.param = param,
	};

	CHECK(drmIoctl(fd, DRM_IOCTL_NSVM_GET_PARAM, &arg) == 0);
	return arg.value;
}

static void svm_init(int fd)
{
	struct drm_nsvm_svm_init arg = { .size = sizeof(arg) };

	CHECK(drmIoctl(fd, DRM_IOCTL_NSVM_SVM_INIT, &arg) == 0);
}

/* EXEC of @n commands; returns 0 or -errno, with @out filled in. */
static int exec(int fd, struct drm_nsvm_cmd *cmds, __u32 n,
		struct drm_nsvm_exec *out)
{
	struct drm_nsvm_exec arg = {
		.size = sizeof(arg),
		.num_cmds = n,
		.cmds = (__u64)(uintptr_t)cmds,
		.cmd_size = sizeof(*cmds),
	};
	int ret = drmIoctl(fd, DRM_IOCTL_NSVM_EXEC, &arg) ? -errno : 0;

	if (out)
		*out = arg;
	return ret;
}

/* drmGetVersion names the driver; the uapi version is the header's. */
static void subtest_version(void)
{
	drmVersionPtr v = drmGetVersion(dev_fd);
	uint64_t uapi = get_param(dev_fd, DRM_NSVM_PARAM_UAPI_VERSION);

	CHECK(v != NULL);
	CHECK(strcmp(v->name, "nsvm") == 0);
	printf("driver %s %d.%d.%d, uapi %u.%u\n", v->name, v->version_major,
	       v->version_minor, v->version_patchlevel,
	       (unsigned int)(uapi >> 16), (unsigned int)(uapi & 0xffff));
	drmFreeVersion(v);
	CHECK(uapi >> 16 == DRM_NSVM_UAPI_MAJOR);
	CHECK((uapi & 0xffff) >= DRM_NSVM_UAPI_MINOR);
	CHECK(get_param(dev_fd, DRM_NSVM_PARAM_FEATURES) & DRM_NSVM_FEATURE_SVM);
}

/* A wrong size, a non-zero pad, an unknown param: -EINVAL. */
static void subtest_bad_args(void)
{
	struct drm_nsvm_get_param arg = {
		.size = sizeof(arg) - 8,
		.param = DRM_NSVM_PARAM_FEATURES,
	};

	CHECK(drmIoctl(dev_fd, DRM_IOCTL_NSVM_GET_PARAM, &arg) == -1 &&
	      errno == EINVAL);
	arg.size = sizeof(arg);
	arg.pad = 1;
	CHECK(drmIoctl(dev_fd, DRM_IOCTL_NSVM_GET_PARAM, &arg) == -1 &&
	      errno == EINVAL);
	arg.pad = 0;
	arg.param = DRM_NSVM_PARAM_COUNT;
	CHECK(drmIoctl(dev_fd, DRM_IOCTL_NSVM_GET_PARAM, &arg) == -1 &&
	      errno == EINVAL);
}

/* y = a * x + y on malloc'd arrays; an atomic returns the old value. */
static void subtest_axpy(void)
{
	const size_t n = 300000;
	uint32_t *x = malloc(n * 4), *y = malloc(n * 4), counter = 41;
	struct drm_nsvm_cmd cmds[2] = {
		{
			.op = DRM_NSVM_OP_AXPY32,
			.dst = (__u64)(uintptr_t)y,
			.src = (__u64)(uintptr_t)x,
			.len = n * 4,
			.value = 5,
		},
		{
			.op = DRM_NSVM_OP_ATOMIC_ADD32,
			.dst = (__u64)(uintptr_t)&counter,
			.value = 1,
		},
	};

	CHECK(x && y);
	for (size_t i = 0; i < n; i++) {
		x[i] = (uint32_t)i * 2654435761u;
		y[i] = (uint32_t)i ^ 0x5a5a5a5a;
	}
	svm_init(dev_fd);
	CHECK(exec(dev_fd, cmds, 2, NULL) == 0);
	for (size_t i = 0; i < n; i++)
		if (y[i] != (((uint32_t)i ^ 0x5a5a5a5a) + 5 * x[i]))
			fail("y[%zu] = %#x", i, y[i]);
	CHECK(cmds[1].value == 41 && counter == 42);
	free(x);
	free(y);
}

/* An unmapped address: -EFAULT, the fault's address, what ran stays. */
static void subtest_fault_addr(void)
{
	uint64_t *ok = mmap(NULL, PAGE, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *hole = mmap(NULL, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
			  -1, 0);
	struct drm_nsvm_cmd cmds[2] = {
		{ .op = DRM_NSVM_OP_FILL, .dst = (__u64)(uintptr_t)ok, .len = 8,
		  .value = 7 },
		{ .op = DRM_NSVM_OP_FILL, .dst = (__u64)(uintptr_t)hole + 8,
		  .len = 8, .value = 7 },
	};
	struct drm_nsvm_exec out;

	CHECK(ok != MAP_FAILED && hole != MAP_FAILED);
	svm_init(dev_fd);
	CHECK(exec(dev_fd, cmds, 2, &out) == -EFAULT);
	CHECK(out.completed == 1);
	CHECK(out.fault_addr / PAGE == (uintptr_t)hole / PAGE);
	CHECK(out.fault_write == 1);
	CHECK(*ok == 7);
}

/* MIGRATE to the device and back, with the data intact. */
static void subtest_migrate(void)
{
	const size_t len = 64 * PAGE;
	struct drm_nsvm_migrate arg = { .size = sizeof(arg) };
	uint8_t *buf;

	if (!(get_param(dev_fd, DRM_NSVM_PARAM_FEATURES) &
	      DRM_NSVM_FEATURE_DEVICE_MEMORY)) {
		printf("Test requirement not met: no device memory\n");
		fflush(stdout);
		_exit(EXIT_SKIP);
	}
	buf = mmap(NULL, len, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(buf != MAP_FAILED);
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(i * 7);
	svm_init(dev_fd);
	arg.start = (__u64)(uintptr_t)buf;
	arg.length = len;
	arg.target = DRM_NSVM_MEM_DEVICE;
	CHECK(drmIoctl(dev_fd, DRM_IOCTL_NSVM_MIGRATE, &arg) == 0);
	CHECK(arg.migrated == len / PAGE && arg.failed == 0);
	arg.target = DRM_NSVM_MEM_SYSTEM;
	arg.migrated = 0;
	CHECK(drmIoctl(dev_fd, DRM_IOCTL_NSVM_MIGRATE, &arg) == 0);
	CHECK(arg.migrated == len / PAGE);
	for (size_t i = 0; i < len; i++)
		if (buf[i] != (uint8_t)(i * 7))
			fail("byte %zu: %#x", i, buf[i]);
}

/*
 * An exec queue from C: AXPY32 as a job, then a wait on its user fence
 * (the job wrote it after its commands), then one that times out, and a
 * job faulting on a hole, which fails the queue with the address.
 */
static void subtest_queue(void)
{
	const size_t n = 100000;
	uint32_t *x = malloc(n * 4), *y = malloc(n * 4);
	uint64_t *fence = calloc(1, 8);
	char *hole = mmap(NULL, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
			  -1, 0);
	struct drm_nsvm_cmd cmd = {
		.op = DRM_NSVM_OP_AXPY32,
		.dst = (__u64)(uintptr_t)y,
		.src = (__u64)(uintptr_t)x,
		.len = n * 4,
		.value = 3,
	};
	struct drm_nsvm_queue_create qc = { .size = sizeof(qc) };
	struct drm_nsvm_submit sub = {
		.size = sizeof(sub),
		.cmds = (__u64)(uintptr_t)&cmd,
		.num_cmds = 1,
		.cmd_size = sizeof(cmd),
		.fence_addr = (__u64)(uintptr_t)fence,
		.fence_value = 1,
	};
	struct drm_nsvm_wait w = {
		.size = sizeof(w),
		.addr = (__u64)(uintptr_t)fence,
		.value = 1,
		.mask = ~0ull,
		.op = DRM_NSVM_WAIT_GTE,
		.timeout_ns = 10000000000ll,
	};
	struct drm_nsvm_queue_query q = { .size = sizeof(q) };

	CHECK(x && y && fence && hole != MAP_FAILED);
	if (!(get_param(dev_fd, DRM_NSVM_PARAM_FEATURES) &
	      DRM_NSVM_FEATURE_QUEUES)) {
		printf("Test requirement not met: no exec queues\n");
		fflush(stdout);
		_exit(EXIT_SKIP);
	}
	for (size_t i = 0; i < n; i++) {
		x[i] = (uint32_t)i;
		y[i] = 1;
	}
	svm_init(dev_fd);
	CHECK(drmIoctl(dev_fd, DRM_IOCTL_NSVM_QUEUE_CREATE, &qc) == 0);
	sub.queue_id = w.queue_id = q.queue_id = qc.queue_id;
	CHECK(drmIoctl(dev_fd, DRM_IOCTL_NSVM_SUBMIT, &sub) == 0);
	CHECK(sub.seqno == 1);
	CHECK(drmIoctl(dev_fd, DRM_IOCTL_NSVM_WAIT, &w) == 0);
	CHECK(*fence == 1);
	for (size_t i = 0; i < n; i++)
		if (y[i] != 1 + 3 * (uint32_t)i)
			fail("y[%zu] = %#x", i, y[i]);
	w.value = 2;
	w.timeout_ns = 1000000;
	CHECK(drmIoctl(dev_fd, DRM_IOCTL_NSVM_WAIT, &w) == -1 && errno == ETIME);
	cmd.op = DRM_NSVM_OP_FILL;
	cmd.dst = (__u64)(uintptr_t)hole;
	cmd.len = 8;
	cmd.src = 0;
	sub.fence_value = 2;
	CHECK(drmIoctl(dev_fd, DRM_IOCTL_NSVM_SUBMIT, &sub) == 0);
	w.timeout_ns = -1;
	CHECK(drmIoctl(dev_fd, DRM_IOCTL_NSVM_WAIT, &w) == -1 && errno == EFAULT);
	CHECK(drmIoctl(dev_fd, DRM_IOCTL_NSVM_QUEUE_QUERY, &q) == 0);
	CHECK(q.error == -EFAULT && q.fault_addr / PAGE == (uintptr_t)hole / PAGE);
	CHECK(q.submitted == 2 && q.completed == 1 && *fence == 1);
	free(x);
	free(y);
	free(fence);
}

/* sw_sync (debugfs sync/sw_sync) has no uapi header; as in IGT. */
struct sw_sync_create_fence_data {
	__u32 value;
	char name[32];
	__s32 fence;
};
#define SW_SYNC_IOC_CREATE_FENCE _IOWR('W', 0, struct sw_sync_create_fence_data)
#define SW_SYNC_IOC_INC _IOW('W', 1, __u32)

/*
 * Sync objects as a runtime uses them through libdrm (drmSyncobj*(), as
 * Mesa does): the capabilities; a job with an in-fence whose sync object
 * holds an unsignaled sw_sync fence does not run until the fence signals;
 * a timeline point signaled from the CPU does not hold a job; a sync
 * object without a fence is refused.
 */
static void subtest_syncobj(void)
{
	uint64_t *fence = calloc(1, 8), cap = 0, point = 3;
	int tl = open("/sys/kernel/debug/sync/sw_sync", O_RDWR);
	struct sw_sync_create_fence_data sf = { .value = 1, .name = "nsvm_c" };
	struct drm_nsvm_queue_create qc = { .size = sizeof(qc) };
	struct drm_nsvm_sync in = { 0 };
	struct drm_nsvm_submit sub = {
		.size = sizeof(sub),
		.cmd_size = sizeof(struct drm_nsvm_cmd),
		.fence_addr = (__u64)(uintptr_t)fence,
		.fence_value = 1,
		.syncs = (__u64)(uintptr_t)&in,
		.num_syncs = 1,
		.sync_size = sizeof(in),
	};
	struct drm_nsvm_wait w = {
		.size = sizeof(w),
		.addr = (__u64)(uintptr_t)fence,
		.value = 1,
		.mask = ~0ull,
		.op = DRM_NSVM_WAIT_GTE,
		.timeout_ns = 100000000ll,
	};
	__u32 one = 1, timeline, empty;

	CHECK(fence && tl >= 0);
	CHECK(drmGetCap(dev_fd, DRM_CAP_SYNCOBJ, &cap) == 0 && cap == 1);
	CHECK(drmGetCap(dev_fd, DRM_CAP_SYNCOBJ_TIMELINE, &cap) == 0 && cap == 1);
	CHECK(get_param(dev_fd, DRM_NSVM_PARAM_FEATURES) & DRM_NSVM_FEATURE_SYNCOBJ);
	svm_init(dev_fd);
	CHECK(drmIoctl(dev_fd, DRM_IOCTL_NSVM_QUEUE_CREATE, &qc) == 0);
	sub.queue_id = w.queue_id = qc.queue_id;
	CHECK(ioctl(tl, SW_SYNC_IOC_CREATE_FENCE, &sf) == 0);
	CHECK(drmSyncobjCreate(dev_fd, 0, &in.handle) == 0);
	CHECK(drmSyncobjImportSyncFile(dev_fd, in.handle, sf.fence) == 0);
	close(sf.fence);
	CHECK(drmIoctl(dev_fd, DRM_IOCTL_NSVM_SUBMIT, &sub) == 0);
	/* Held: the wait times out, nothing was written. */
	CHECK(drmIoctl(dev_fd, DRM_IOCTL_NSVM_WAIT, &w) == -1 && errno == ETIME);
	CHECK(*fence == 0);
	CHECK(ioctl(tl, SW_SYNC_IOC_INC, &one) == 0);
	w.timeout_ns = 10000000000ll;
	CHECK(drmIoctl(dev_fd, DRM_IOCTL_NSVM_WAIT, &w) == 0 && *fence == 1);
	/* A timeline point the CPU signaled. */
	CHECK(drmSyncobjCreate(dev_fd, 0, &timeline) == 0);
	CHECK(drmSyncobjTimelineSignal(dev_fd, &timeline, &point, 1) == 0);
	in.handle = timeline;
	in.point = point;
	sub.fence_value = w.value = 2;
	CHECK(drmIoctl(dev_fd, DRM_IOCTL_NSVM_SUBMIT, &sub) == 0);
	CHECK(drmIoctl(dev_fd, DRM_IOCTL_NSVM_WAIT, &w) == 0 && *fence == 2);
	/* No fence yet: refused, not waited for. */
	CHECK(drmSyncobjCreate(dev_fd, 0, &empty) == 0);
	in.handle = empty;
	in.point = 0;
	CHECK(drmIoctl(dev_fd, DRM_IOCTL_NSVM_SUBMIT, &sub) == -1 && errno == EINVAL);
	CHECK(drmSyncobjDestroy(dev_fd, empty) == 0);
	CHECK(drmSyncobjDestroy(dev_fd, timeline) == 0);
	close(tl);
	free(fence);
}

/*
 * libdrm's device enumeration, as Mesa and the Vulkan loaders use it:
 * drmGetDevices2() lists every nsvm device (as many as the render nodes
 * nsvm drives: none folded into another) on the platform bus, named
 * nsvm.<index>, with its primary and render nodes, and
 * drmGetDevice2() of an open render node names the same device. The libdrm
 * linked in is the build host's (Debian 12: 2.4.114), which predates the
 * faux bus.
 */
static void subtest_enumerate(void)
{
	drmDevicePtr devs[64];
	int nodes = 0, found = 0, n;

	for (int minor = 128; minor < 192; minor++) {
		int fd = open_render_minor(minor);

		if (fd >= 0) {
			nodes++;
			close(fd);
		}
	}
	if (!nodes)
		skip_no_device();

	n = drmGetDevices2(0, devs, 64);
	CHECK(n >= 0);
	for (int i = 0; i < n; i++) {
		drmDevicePtr d = devs[i], same = NULL;
		drmVersionPtr v;
		int fd;

		if (!(d->available_nodes & (1 << DRM_NODE_RENDER)))
			continue;
		fd = open(d->nodes[DRM_NODE_RENDER], O_RDWR | O_CLOEXEC);
		CHECK(fd >= 0);
		v = drmGetVersion(fd);
		CHECK(v);
		if (strcmp(v->name, "nsvm") == 0) {
			found++;
			printf("%s, %s: bus %d, %s\n", d->nodes[DRM_NODE_PRIMARY],
			       d->nodes[DRM_NODE_RENDER], d->bustype,
			       d->bustype == DRM_BUS_PLATFORM ?
				       d->businfo.platform->fullname : "?");
			CHECK(d->bustype == DRM_BUS_PLATFORM);
			CHECK(strncmp(d->businfo.platform->fullname, "nsvm.", 5) == 0);
			CHECK(d->available_nodes & (1 << DRM_NODE_PRIMARY));
			CHECK(drmGetDevice2(fd, 0, &same) == 0);
			CHECK(same->bustype == DRM_BUS_PLATFORM);
			CHECK(strcmp(same->nodes[DRM_NODE_RENDER],
				     d->nodes[DRM_NODE_RENDER]) == 0);
			drmFreeDevice(&same);
		}
		drmFreeVersion(v);
		close(fd);
	}
	drmFreeDevices(devs, n);
	if (found != nodes)
		fail("drmGetDevices2() found %d nsvm device(s) of %d", found, nodes);
}

static const struct subtest {
	const char *name;
	void (*run)(void);
} subtests[] = {
	{ "version", subtest_version },
	{ "bad-args", subtest_bad_args },
	{ "axpy", subtest_axpy },
	{ "fault-addr", subtest_fault_addr },
	{ "migrate", subtest_migrate },
	{ "queue", subtest_queue },
	{ "syncobj", subtest_syncobj },
	{ "enumerate", subtest_enumerate },
};

/* Runs one subtest in a child, on a file of its own; returns its exit code. */
static int run_one(const struct subtest *t)
{
	struct timeval t0, t1;
	const char *word;
	int status = 0;
	pid_t pid;

	printf("Starting subtest: %s\n", t->name);
	fflush(stdout);
	gettimeofday(&t0, NULL);
	pid = fork();
	if (pid == 0) {
		dev_fd = open_nsvm();
		t->run();
		fflush(stdout);
		_exit(EXIT_SUCCESS);
	}
	while (pid > 0 && waitpid(pid, &status, 0) < 0)
		;
	gettimeofday(&t1, NULL);
	if (pid < 0 || !WIFEXITED(status))
		status = EXIT_FAILURE;
	else
		status = WEXITSTATUS(status);
	word = status == 0 ? "SUCCESS" : status == EXIT_SKIP ? "SKIP" : "FAIL";
	printf("Subtest %s: %s (%.3fs)\n", t->name, word,
	       (t1.tv_sec - t0.tv_sec) + (t1.tv_usec - t0.tv_usec) / 1e6);
	fflush(stdout);
	return status;
}

int main(int argc, char **argv)
{
	const char *glob = "*";
	int pass = 0, fail_count = 0;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--list-subtests") == 0) {
			for (size_t j = 0; j < sizeof(subtests) / sizeof(*subtests); j++)
				printf("%s\n", subtests[j].name);
			return EXIT_SUCCESS;
		} else if (strcmp(argv[i], "--run-subtest") == 0 && i + 1 < argc) {
			glob = argv[++i];
		} else {
			fprintf(stderr, "usage: %s [--list-subtests] [--run-subtest GLOB]\n",
				argv[0]);
			return EXIT_FAILURE;
		}
	}
	for (size_t j = 0; j < sizeof(subtests) / sizeof(*subtests); j++) {
		if (fnmatch(glob, subtests[j].name, 0))
			continue;
		switch (run_one(&subtests[j])) {
		case EXIT_SUCCESS:
			pass++;
			break;
		case EXIT_SKIP:
			break;
		default:
			fail_count++;
		}
	}
	return fail_count ? EXIT_FAILURE : pass ? EXIT_SUCCESS : EXIT_SKIP;
}
