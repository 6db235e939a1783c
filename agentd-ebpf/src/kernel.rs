//! Reads of kernel structs at offsets resolved from BTF by user space.
use agentd_common::{FileId, KernelOffsets};
use aya_ebpf::helpers::bpf_probe_read_kernel;

/// Filled in by the loader (`EbpfLoader::set_global`) before load.
#[unsafe(no_mangle)]
static KERNEL_OFFSETS: KernelOffsets = KernelOffsets {
    bprm_file: 0,
    bprm_filename: 0,
    file_inode: 0,
    file_mode: 0,
    file_path: 0,
    inode_ino: 0,
    inode_sb: 0,
    sb_dev: 0,
    task_tgid: 0,
    task_start_boottime: 0,
    task_mm: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
};

#[inline(always)]
pub fn offsets() -> KernelOffsets {
    // Volatile: the value is patched into .rodata at load time, so the compiler
    // must not fold the zero initialiser.
    unsafe { core::ptr::read_volatile(&KERNEL_OFFSETS) }
}

#[inline(always)]
unsafe fn read_at<T>(base: *const u8, offset: u32) -> Result<T, i32> {
    unsafe { bpf_probe_read_kernel(base.add(offset as usize) as *const T) }
}

/// `bprm->file`
#[inline(always)]
pub unsafe fn bprm_file(bprm: *const u8) -> Result<*const u8, i32> {
    unsafe { read_at::<*const u8>(bprm, offsets().bprm_file) }
}

/// `bprm->filename`
#[inline(always)]
pub unsafe fn bprm_filename(bprm: *const u8) -> Result<*const u8, i32> {
    unsafe { read_at::<*const u8>(bprm, offsets().bprm_filename) }
}

/// Device and inode of a `struct file *`.
#[inline(always)]
pub unsafe fn file_id(file: *const u8) -> Result<FileId, i32> {
    let o = offsets();
    unsafe {
        let inode = read_at::<*const u8>(file, o.file_inode)?;
        let ino = read_at::<u64>(inode, o.inode_ino)?;
        let sb = read_at::<*const u8>(inode, o.inode_sb)?;
        let dev = read_at::<u32>(sb, o.sb_dev)? as u64;
        Ok(FileId { dev, ino })
    }
}

/// `task->tgid`
#[inline(always)]
pub unsafe fn task_tgid(task: *const u8) -> Result<u32, i32> {
    unsafe { read_at::<u32>(task, offsets().task_tgid) }
}

/// `task->start_boottime` (CLOCK_BOOTTIME ns at creation)
#[inline(always)]
pub unsafe fn task_start_boottime(task: *const u8) -> Result<u64, i32> {
    unsafe { read_at::<u64>(task, offsets().task_start_boottime) }
}

/// The argument area of the calling process's new image:
/// `current->mm->arg_start` and `arg_end` (set by the binary loader before
/// `sched_process_exec` fires).
#[inline(always)]
pub unsafe fn current_arg_area() -> Result<(u64, u64), i32> {
    let o = offsets();
    unsafe {
        let task = aya_ebpf::helpers::bpf_get_current_task() as *const u8;
        let mm = read_at::<*const u8>(task, o.task_mm)?;
        if mm.is_null() {
            return Err(-1);
        }
        Ok((
            read_at::<u64>(mm, o.mm_arg_start)?,
            read_at::<u64>(mm, o.mm_arg_end)?,
        ))
    }
}
