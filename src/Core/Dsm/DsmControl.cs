/*-------------------------------------------------------------------------
 * DsmControl.cs
 *   The DSM control segment: a table, in the main segment, of every dynamic
 *   shared memory segment the cluster has, with its reference count.
 *
 * NOTES
 *   Layout of "PgIpc.DsmControl" (ShmemInitStruct):
 *     DsmControlHeader (128 bytes: the LWLock on its own cache line, then
 *                       the counts)
 *     DsmControlItem[MaxItems] (32 bytes each)
 *     the data directory (length + bytes), then the main region's bitmap
 *                       and pages (DsmRegistry.MainRegion.cs)
 *   Everything after initialisation is read and written under the header's
 *   LWLock (tranche DynamicSharedMemoryControl), taken exclusively, and,
 *   inside it, the ItemsLock spinlock. Two locks because a process that
 *   detaches from the cluster must still give back its references after it
 *   can no longer act as a participant (the LWLock needs one): that path
 *   takes ItemsLock alone. Every other path queues (sleeping) on the LWLock,
 *   so ItemsLock only ever sees at most one participant plus the rare
 *   detaching process.
 *
 *   Reference counts, as PostgreSQL's dsm.c:
 *     0   the slot is free;
 *     1   moribund: the last reference went away and somebody is removing
 *         the OS object outside the lock; nobody may attach;
 *     >=2 active: 1 + one per mapping + 1 if pinned.
 *   NItems only grows (a high-water mark); free slots below it are reused.
 *
 *   MaxItems, the implementation and the data directory's length are
 *   checked once per attach (DsmRegistry.ValidateControl) and cached;
 *   NItems, which changes, is clamped to the cached MaxItems wherever it is
 *   read under ItemsLock (nothing there may throw) and checked at attach.
 *
 *   Mirrors src/backend/storage/ipc/dsm.c (dsm_control_header,
 *   dsm_control_item).
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Dsm;

/// <summary>
/// Head of the control table. Layout: 128 bytes.
/// <code>
///   0  Lock            LWLock (DynamicSharedMemoryControl); protects every field below and the items
///  64  Magic           immutable after Init (DsmControlHeader.MagicValue)
///  68  MaxItems        immutable after Init
///  72  NItems          Lock: high-water mark of used slots
///  76  Implementation  immutable after Init: the cluster's default DsmImplementation
///  80  CreatedCount    Lock: segments ever created (statistics)
///  88  DestroyedCount  Lock: segments whose OS object was removed (statistics)
///  96  ItemsLock       spinlock word (SLock) held, inside Lock, around every access to the fields and items
/// 100  MainRegionPages immutable after Init: 4 KiB pages reserved in the main segment (DsmRegistry.MainRegion.cs)
/// 104  MainRegionFree  Lock + ItemsLock: of those, pages not in use
/// </code>
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 128)]
internal struct DsmControlHeader
{
    public const uint MagicValue = 0x9A793C5D;

    public LWLockPadded Lock;
    public uint Magic;
    public int MaxItems;
    public int NItems;
    public int Implementation;
    public long CreatedCount;
    public long DestroyedCount;
    public int ItemsLock;
    public int MainRegionPages;
    public int MainRegionFree;
}

/// <summary>
/// One slot of the control table. Layout: 32 bytes. Every field: written under the header's Lock and ItemsLock (or ItemsLock alone, see DsmControl.cs).
/// <code>
///   0  Handle          the segment's handle (valid while RefCnt != 0)
///   4  RefCnt          0 free, 1 moribund, >= 2 active (see DsmControl.cs)
///   8  Size            bytes asked for at create
///  16  Implementation  DsmImplementation the segment was made with
///  20  Pinned          1 while dsm_pin_segment's extra reference is held
///  24  FirstPage       first page in the main region (Implementation MainRegion), -1 for an OS segment
///  28  PinnedOsHandle  the supervisor's handle to the OS object while pinned (Windows: IDsmProvider.PinSegment), else 0
/// </code>
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 32)]
internal struct DsmControlItem
{
    public uint Handle;
    public uint RefCnt;
    public long Size;
    public int Implementation;
    public int Pinned;
    public int FirstPage;
    public int PinnedOsHandle;
}
