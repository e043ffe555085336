"""Where the filesystem puts the inodes of unpacked layers and snapshot uppers (ext4's Orlov hint).

On ext4 without a journal (CI runners' scratch disks, this machine's ``/``) creating an inode scans
past every inode of its block group freed in the last ~30 s (``find_inode_bit`` -> ``recently_deleted``
in fs/ext4/ialloc.c): beside test suites or other builds that churn files, 300-600 us of kernel CPU per
file instead of ~20. A directory flagged "top of directory hierarchy" (``chattr +T``, ``FS_TOPDIR_FL``)
makes the allocator place each new subdirectory as it places top-level ones, in a block group with
many free inodes of its own choosing rather than beside its parent; the files created under it follow.
The flag changes where inodes live, never what a layer holds.
"""

from __future__ import annotations

import array
import fcntl
import os
from pathlib import Path

__all__ = ["FS_TOPDIR_FL", "mark_top_directory"]

# linux/fs.h: FS_IOC_GETFLAGS / FS_IOC_SETFLAGS (_IOR/_IOW('f', 1/2, long) on 64-bit) and FS_TOPDIR_FL.
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
FS_TOPDIR_FL = 0x00020000


def mark_top_directory(path: Path) -> bool:
    """Set ``FS_TOPDIR_FL`` on the directory ``path``; False where the filesystem has no such flag.

    Best effort by design: tmpfs, overlayfs, xfs and btrfs answer ENOTTY/EOPNOTSUPP/EINVAL, a user who does
    not own the directory EPERM; callers work the same without the placement hint."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        flags = array.array("i", [0, 0])  # the kernel reads and writes an int; room for a long, whatever the ABI
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags, True)
        if flags[0] & FS_TOPDIR_FL:
            return True
        flags[0] |= FS_TOPDIR_FL
        fcntl.ioctl(fd, _FS_IOC_SETFLAGS, flags, True)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
