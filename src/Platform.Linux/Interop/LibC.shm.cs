// <sys/shm.h>, <sys/ipc.h>: System V shared memory (shmget, shmat, shmdt, shmctl). Our own bindings:
// Tmds.LibC 0.5.0 binds none of the SysV IPC calls (no shm*, sem*, msg*, nor struct shmid_ds).
using System.Runtime.InteropServices;

namespace PgIpc.Platform.Linux.Interop;

internal static unsafe partial class LibC
{
    public const int IPC_PRIVATE = 0;
    public const int IPC_CREAT = 0x200;   // 01000
    public const int IPC_EXCL = 0x400;    // 02000
    public const int IPC_RMID = 0;
    public const int IPC_STAT = 2;
    public const int SHM_HUGETLB = 0x800; // 04000
    public const int SHM_RDONLY = 0x1000; // 010000
    /// <summary>Bit in shm_perm.mode: IPC_RMID was called, the segment goes when the last process detaches.</summary>
    public const int SHM_DEST = 0x200;    // 01000

    /// <summary>struct ipc_perm, 64-bit glibc (x86_64, aarch64): 48 bytes.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 48)]
    public struct ipc_perm
    {
        [FieldOffset(0)] public int __key;
        [FieldOffset(4)] public uint uid;
        [FieldOffset(8)] public uint gid;
        [FieldOffset(12)] public uint cuid;
        [FieldOffset(16)] public uint cgid;
        [FieldOffset(20)] public ushort mode;
    }

    /// <summary>struct shmid_ds, 64-bit glibc: 112 bytes; shm_segsz 48, shm_cpid 80, shm_lpid 84, shm_nattch 88.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 112)]
    public struct shmid_ds
    {
        [FieldOffset(0)] public ipc_perm shm_perm;
        [FieldOffset(48)] public nuint shm_segsz;
        [FieldOffset(56)] public long shm_atime;
        [FieldOffset(64)] public long shm_dtime;
        [FieldOffset(72)] public long shm_ctime;
        [FieldOffset(80)] public int shm_cpid;
        [FieldOffset(84)] public int shm_lpid;
        [FieldOffset(88)] public nuint shm_nattch;
    }

    /// <summary>Returns the segment id, or -1 with errno.</summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "shmget", SetLastError = true)]
    public static partial int shmget(int key, nuint size, int shmflg);

    /// <summary>Returns the address, or (void*)-1 with errno (not NULL).</summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "shmat", SetLastError = true)]
    public static partial void* shmat(int shmid, void* shmaddr, int shmflg);

    [LibraryImport(Libraries.Libc, EntryPoint = "shmdt", SetLastError = true)]
    public static partial int shmdt(void* shmaddr);

    [LibraryImport(Libraries.Libc, EntryPoint = "shmctl", SetLastError = true)]
    public static partial int shmctl(int shmid, int cmd, shmid_ds* buf);
}
