/*-------------------------------------------------------------------------
 * LayoutTests.cs
 *   Pins the size and key field offsets of every struct that lives in
 *   shared memory ([SharedStruct]), and fails when such a struct has no pin
 *   or when a struct in Core is neither shared nor declared process-local.
 *   A change here is a change of the segment layout: bump
 *   PgShmemHeader.CurrentLayoutVersion with it.
 *-------------------------------------------------------------------------
 */
using System.Reflection;
using System.Runtime.InteropServices;
using NUnit.Framework;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Tests;

public sealed class LayoutTests
{
    /// <summary>Every shared struct: its size and the offsets of its key fields.</summary>
    private static readonly Dictionary<Type, (int Size, (string Field, int Offset)[] Fields)> s_pins = new()
    {
        [typeof(PgShmemHeader)] = (768, [
            ("Magic", 0), ("LayoutVersion", 4), ("CreatorPid", 8), ("State", 12), ("CreationTimeUnixMs", 16),
            ("TotalSize", 24), ("Cookie", 32), ("KeyHash", 40), ("IndexOffset", 48), ("IndexCapacity", 56),
            ("AttachTableSize", 60), ("Key", 64), ("AllocLock", 128), ("FreeOffset", 192), ("AnonymousBytes", 200),
            ("AnonymousCount", 208), ("AttachedPids", 256)]),
        [typeof(ShmemIndexHeader)] = (128, [("Lock", 0), ("Count", 64), ("Capacity", 68)]),
        [typeof(ShmemIndexEntry)] = (128, [
            ("Name", 0), ("NameLength", 64), ("NameHash", 68), ("State", 72), ("InitializerPid", 76),
            ("Offset", 80), ("Size", 88), ("AllocatedSize", 96)]),
        [typeof(SpinLockPadded)] = (64, [("Value", 0)]),
        [typeof(SharedHashHeader)] = (64, [
            ("Magic", 0), ("KeySize", 4), ("ValueSize", 8), ("ElementSize", 12), ("Capacity", 16),
            ("NumPartitions", 20), ("BucketsPerPartition", 24), ("BucketMaskShift", 28), ("BucketsOffset", 32),
            ("ElementsOffset", 40)]),
        [typeof(SharedHashPartition)] = (64, [("FreeListLock", 0), ("FreeHead", 4), ("FreeCount", 8), ("Count", 12)]),
        [typeof(ShmemOffset<long>)] = (8, [("Value", 0)]),
        [typeof(PgIpc.Proc.PgProc)] = (256, [
            ("Pid", 0), ("ProcNumber", 4), ("Kind", 8), ("FreeNext", 12), ("Generation", 16), ("OwnerThreadId", 20),
            ("AcquiredAtUnixMs", 24), ("LwWaiting", 32), ("LwWaitMode", 36), ("LwWaitNext", 40), ("LwWaitPrev", 44),
            ("LwWaitLockOffset", 48), ("CvWaitNext", 56), ("CvWaitPrev", 60), ("Latch", 64), ("ProcSignalFlags", 80),
            ("WaitEventInfo", 88), ("BarrierGeneration", 96), ("BarrierFlags", 104), ("InterruptRequesterPid", 108), ("PidIdentity", 112), ("Semaphore", 128), ("LatchWake", 192),
            ("NumHeldLWLocks", 224), ("HeldLWLocks", 228)]),
        [typeof(PgIpc.Proc.PgLatch)] = (16, [("IsSet", 0), ("MaybeSleeping", 4), ("OwnerPid", 8), ("OwnerProcNumber", 12)]),
        [typeof(PgIpc.Proc.ProcGlobalHeader)] = (192, [
            ("Lock", 0), ("MaxProcs", 64), ("NumBackends", 68), ("NumAuxiliary", 72), ("NumBackgroundWorkers", 76),
            ("FreeHeads", 80), ("SemaphoreStorageSize", 92), ("ProcsOffset", 96), ("SemaphoreName", 104),
            ("SlotsHandedOut", 136), ("SlotsReclaimed", 144), ("Magic", 152), ("SupervisorPid", 156)]),
        [typeof(LWLock)] = (16, [("Tranche", 0), ("ExclusiveHolder", 2), ("State", 4), ("WaitHead", 8), ("WaitTail", 12)]),
        [typeof(LWLockPadded)] = (64, [("Lock", 0)]),
        // Lock manager (Lmgr/LockShmem.cs)
        [typeof(PgIpc.Lmgr.LockManagerHeader)] = (128, [
            ("Magic", 0), ("MaxProcs", 4), ("MaxLocksPerParticipant", 8), ("LockCapacity", 12), ("ProcLockCapacity", 16),
            ("DeadlockTimeoutMs", 20), ("LockTimeoutMs", 24), ("PartitionLocksOffset", 32), ("StrongLocksOffset", 40),
            ("ProcStatesOffset", 48), ("DeadlockChecks", 56), ("DeadlocksFound", 64), ("SoftDeadlocksResolved", 72)]),
        [typeof(PgIpc.Lmgr.LockTag)] = (20, [("Field1", 0), ("Field2", 4), ("Field3", 8), ("Field4", 12), ("Kind", 16), ("Type", 18)]),
        [typeof(PgIpc.Lmgr.StrongLockCounts)] = (64 + 4 * 1024, [("Mutex", 0), ("Count", 64)]),
        [typeof(PgIpc.Lmgr.LockEntry)] = (136, [
            ("Tag", 0), ("HashCode", 20), ("GrantMask", 24), ("WaitMask", 28), ("NRequested", 32), ("NGranted", 36),
            ("Requested", 40), ("Granted", 76), ("WaitHead", 112), ("WaitTail", 116), ("WaitCount", 120), ("ProcLocksHead", 128)]),
        [typeof(PgIpc.Lmgr.ProcLockKey)] = (24, [("Tag", 0), ("ProcNumber", 20)]),
        [typeof(PgIpc.Lmgr.ProcLockEntry)] = (48, [
            ("LockOffset", 0), ("ProcNumber", 8), ("HoldMask", 12), ("NextOnLock", 16), ("PrevOnLock", 24), ("NextOnProc", 32), ("PrevOnProc", 40)]),
        [typeof(PgIpc.Lmgr.LockProcState)] = (384, [
            ("FpInfoLock", 0), ("OwnerPid", 16), ("OwnerGeneration", 20), ("WaitStatus", 24), ("WaitMode", 28), ("WaitLockOffset", 32),
            ("WaitProcLockOffset", 40), ("WaitNext", 48), ("WaitPrev", 52), ("HeldLocksOnWait", 56), ("WaitStartUnixMs", 64),
            ("FpLockBits", 72), ("FpRel", 80), ("ProcLockHeads", 208)]),
        [typeof(PgIpc.Dsm.DsmControlHeader)] = (128, [
            ("Lock", 0), ("Magic", 64), ("MaxItems", 68), ("NItems", 72), ("Implementation", 76), ("CreatedCount", 80),
            ("DestroyedCount", 88), ("ItemsLock", 96), ("MainRegionPages", 100), ("MainRegionFree", 104)]),
        [typeof(PgIpc.Dsm.DsmControlItem)] = (32, [("Handle", 0), ("RefCnt", 4), ("Size", 8), ("Implementation", 16), ("Pinned", 20), ("FirstPage", 24), ("PinnedOsHandle", 28)]),
        [typeof(ConditionVariable)] = (16, [("Mutex", 0), ("WakeupHead", 4), ("WakeupTail", 8)]),
        [typeof(PgIpc.Signals.ProcSignalHeader)] = (64, [("BarrierGeneration", 0), ("MaxProcs", 8), ("Magic", 12)]),
        [typeof(PgIpc.Signals.PMSignalState)] = (192, [("Magic", 0), ("SupervisorPid", 4), ("SupervisorIdentity", 8), ("Flags", 64)]),
        [typeof(PgIpc.Postmaster.BackgroundWorkerArrayHeader)] = (128, [
            ("Lock", 0), ("Magic", 64), ("NumSlots", 68), ("ShutdownRequested", 72), ("SupervisorPid", 76), ("Registrations", 80)]),
        [typeof(PgIpc.Postmaster.BackgroundWorkerSlot)] = (1024, [
            ("InUse", 0), ("State", 4), ("Pid", 8), ("Generation", 12), ("RestartIntervalMs", 16), ("Kind", 20),
            ("NameLength", 24), ("CommandLength", 28), ("Name", 32), ("Command", 96)]),
        [typeof(PgIpc.Postmaster.SupervisorRequestsHeader)] = (128, [
            ("Lock", 0), ("Magic", 64), ("NumSlots", 68), ("NumStopFlags", 72), ("NextSequence", 80)]),
        [typeof(PgIpc.Postmaster.SupervisorRequestSlot)] = (1024, [
            ("State", 0), ("Kind", 4), ("Generation", 8), ("RequesterPid", 12), ("Sequence", 16), ("WorkerPid", 24), ("ExitCode", 28),
            ("Code", 32), ("NameLength", 36), ("ArgumentLength", 40), ("ResultLength", 44), ("Name", 64), ("Argument", 128), ("Result", 576)]),
        [typeof(LWLockTrancheHeader)] = (128, [("Lock", 0), ("NextTrancheId", 64), ("Capacity", 68), ("Count", 72), ("Magic", 76)]),
        [typeof(LWLockTrancheEntry)] = (128, [("Name", 0), ("NameLength", 64), ("TrancheId", 68), ("NumLocks", 72), ("LocksOffset", 80)]),
        [typeof(PgIpc.Sinval.SharedInvalidationMessage)] = (16, [("Kind", 0), ("DatabaseId", 4), ("ObjectId", 8), ("Payload", 12)]),
        [typeof(PgIpc.Sinval.SISegHeader)] = (256, [
            ("WriteLock", 0), ("ReadLock", 64), ("MsgnumLock", 128), ("MinMsgNum", 192), ("MaxMsgNum", 196),
            ("NextThreshold", 200), ("LastBackend", 204), ("MaxProcs", 208), ("RingSize", 212), ("ResetsIssued", 216),
            ("SignalsSent", 224), ("Magic", 232)]),
        [typeof(PgIpc.Sinval.ProcState)] = (64, [
            ("Pid", 0), ("Generation", 4), ("NextMsgNum", 8), ("ResetState", 12), ("Signaled", 16), ("HasMessages", 20),
            ("SendOnly", 24)]),
        [typeof(PgIpc.Mq.ShmTocHeader)] = (32, [("Magic", 0), ("Mutex", 8), ("NumEntries", 12), ("TotalBytes", 16), ("AllocatedBytes", 24)]),
        [typeof(PgIpc.Mq.ShmTocEntry)] = (16, [("Key", 0), ("Offset", 8)]),
        [typeof(PgIpc.Buffers.BufferTag)] = (12, [("RelNumber", 0), ("Fork", 4), ("BlockNumber", 8)]),
        [typeof(PgIpc.Buffers.BufferDesc)] = (64, [
            ("Tag", 0), ("BufferId", 12), ("StateWord", 16), ("WaitBackendProcNo", 20), ("FreeNext", 24), ("IoOwnerPid", 28), ("ContentLock", 32),
            ("IoCv", 48)]),
        [typeof(PgIpc.Buffers.BufferStrategyControl)] = (128, [
            ("Lock", 0), ("FirstFreeBuffer", 4), ("LastFreeBuffer", 8), ("CompletePasses", 12), ("NumBuffers", 16), ("Magic", 20),
            ("BgwProcNo", 24), ("NextVictimBuffer", 64), ("NumBufferAllocs", 68)]),
        [typeof(PgIpc.Buffers.CheckpointerShmem)] = (384, [
            ("CkptLock", 0), ("CheckpointerProcNo", 4), ("CheckpointerPid", 8), ("CkptStarted", 12), ("CkptDone", 16),
            ("CkptFailed", 20), ("CkptFlags", 24), ("NumTimed", 28), ("NumRequested", 32), ("LastErrorLength", 36),
            ("BuffersWritten", 40), ("FilesSynced", 48), ("Magic", 56), ("MaxRequests", 60), ("StartCv", 64), ("DoneCv", 80),
            ("QueueLock", 96), ("NumRequests", 100), ("AbsorbCycle", 104), ("LastError", 128)]),
        [typeof(PgIpc.Buffers.CheckpointerRequest)] = (12, [("RelNumber", 0), ("Fork", 4), ("SegNo", 8)]),
        // Shared statistics (Stats/PgStatShmem.cs)
        [typeof(PgIpc.Stats.PgStatShmem)] = (384, [
            ("Magic", 0), ("MaxProcs", 4), ("ResetLock", 8), ("BgWriterResetAtUs", 16), ("CheckpointerResetAtUs", 24), ("BgWriter", 64),
            ("Checkpointer", 128), ("BgWriterOffset", 192), ("CheckpointerOffset", 256)]),
        [typeof(PgIpc.Stats.PgStatBgWriterCounters)] = (64, [
            ("ChangeCount", 0), ("BuffersClean", 8), ("MaxWrittenClean", 16), ("BuffersAlloc", 24), ("Rounds", 32)]),
        [typeof(PgIpc.Stats.PgStatCheckpointerCounters)] = (64, [
            ("ChangeCount", 0), ("NumTimed", 8), ("NumRequested", 16), ("WriteTimeUs", 24), ("SyncTimeUs", 32), ("BuffersWritten", 40),
            ("FilesSynced", 48), ("NumDone", 56)]),
        [typeof(PgIpc.Stats.PgBackendStatus)] = (384, [
            ("ChangeCount", 0), ("Pid", 4), ("Kind", 8), ("State", 12), ("BackendStartUs", 16), ("StateChangeUs", 24), ("DetailLength", 32),
            ("BackendTypeLength", 36), ("BackendType", 40), ("Detail", 128)]),
        [typeof(PgIpc.Wal.XLogCtlData)] = (640, [
            ("InsertPosLock", 0), ("CurrBytePos", 8), ("PrevBytePos", 16), ("RedoRecPtr", 24), ("FullPageWrites", 32), ("Records", 40), ("BytesInserted", 48), ("InfoLock", 64),
            ("WriteRqst", 72), ("FlushRqst", 80), ("CkptRequestedSeg", 88), ("LogwrtWrite", 128), ("LogwrtFlush", 136),
            ("InitializedUpTo", 192), ("Magic", 256), ("NumBuffers", 260), ("SegmentSize", 264), ("Timeline", 268), ("SystemId", 272),
            ("MaxWalSize", 280), ("WriterDelayMs", 288), ("WriterFlushAfter", 292), ("FullPageImages", 336), ("Fsyncs", 352),
            ("LastCheckpoint", 384), ("LastCheckpointRedo", 392), ("State", 400), ("WriteLock", 448), ("BufMappingLock", 512),
            ("ControlLock", 576)]),
        [typeof(PgIpc.Wal.WalInsertLockPadded)] = (64, [("Lock", 0), ("InsertingAt", 16)]),
        [typeof(PgIpc.Mq.ShmMqHeader)] = (192, [
            ("Mutex", 0), ("ReceiverProcNo", 4), ("SenderProcNo", 8), ("Detached", 12), ("RingSize", 16), ("RingOffset", 24),
            ("ReceiverPid", 32), ("SenderPid", 36), ("Magic", 40), ("BytesRead", 64), ("BytesWritten", 128)]),
        [typeof(PgIpc.Storage.SharedFileSetData)] = (24, [("Magic", 0), ("RefCount", 4), ("CreatorPid", 8), ("Number", 12), ("SegmentSize", 16)]),
    };

    /// <summary>Structs in Core that never live in shared memory (handles, views, results).</summary>
    private static readonly HashSet<Type> s_processLocal =
    [
        typeof(ShmemHandle), typeof(ShmemRegion), typeof(PgIpc.Platform.SegmentOsStatus),
        // The module list as read from PgIpc.ClusterConfig (a managed copy; the record itself is bytes, see ClusterConfig.cs).
        typeof(PgIpc.Postmaster.ModuleRecord),
        // Per-process memory contexts (native, process-local memory; never in a segment).
        typeof(PgIpc.Memory.MemoryChunk), typeof(PgIpc.Memory.AllocSetBlock), typeof(PgIpc.Memory.GenerationBlock),
        typeof(PgIpc.Memory.SlabBlock), typeof(PgIpc.Memory.MemoryContextCounters), typeof(PgIpc.Memory.MemoryBudget),
        // Views and reports of shared state, held by one process.
        typeof(LWLockArray), typeof(PgIpc.Proc.PgProcInfo),
        // Inspection rows (pgipc inspect): a background worker slot's and a DSM control item's copy.
        typeof(PgIpc.Postmaster.BackgroundWorkerInfo), typeof(PgIpc.Postmaster.TakenRequest), typeof(PgIpc.Dsm.DsmSegmentInfo),
        // Lock manager: the local lock table's key and entry, a deadlock report's edge, a pg_locks row.
        typeof(PgIpc.Lmgr.LocalLockKey), typeof(PgIpc.Lmgr.LocalLock), typeof(PgIpc.Lmgr.DeadlockInfo), typeof(PgIpc.Lmgr.LockStatus),
        typeof(PgIpc.Platform.WaitEvent), typeof(PgIpc.Latch.WaitEventId), typeof(PgIpc.Platform.FileOwnership),
        typeof(PgIpc.Platform.SharedMemoryOptions),
        // shm_toc / shm_mq: a chunk view, the size estimator, a message's pieces on the stack.
        typeof(PgIpc.Mq.ShmTocChunk), typeof(PgIpc.Mq.ShmTocEstimator), typeof(PgIpc.Mq.ShmMqPieces),
        // Buffer pool reports: a checkpoint's figures, a background writer round's, a checkpointer status snapshot.
        typeof(PgIpc.Buffers.CheckpointStats), typeof(PgIpc.Buffers.BgWriterRound), typeof(PgIpc.Buffers.CheckpointerStatus),
        typeof(PgIpc.Stats.PgStatBgWriter), typeof(PgIpc.Stats.PgStatCheckpointer),
        // WAL: the segment geometry (a value), a statistics snapshot, the control file's contents (a file, not shared memory).
        typeof(PgIpc.Wal.WalGeometry), typeof(PgIpc.Wal.WalStats), typeof(PgIpc.Wal.ControlFileData),
        // The cluster's module list as this process read it (serialised into PgIpc.ClusterConfig, never mapped).
        typeof(PgIpc.Postmaster.ModuleRecord),
    ];

    private static IEnumerable<Type> SharedStructs()
        => typeof(ShmemSegment).Assembly.GetTypes().Where(t => t.GetCustomAttribute<SharedStructAttribute>() is not null);

    public static IEnumerable<TestCaseData> PinnedStructs()
        => s_pins.Select(p => new TestCaseData(p.Key).SetArgDisplayNames(p.Key.Name));

    [TestCaseSource(nameof(PinnedStructs))]
    public void SizeAndOffsetsArePinned(Type t)
    {
        (int size, (string Field, int Offset)[] fields) = s_pins[t];
        if (t.IsGenericType)
        {
            // Marshal refuses generic types; a generic shared struct must be a single field at offset 0.
            Assert.That(SizeOfUnmanaged(t), Is.EqualTo(size), $"sizeof({t.Name})");
            FieldInfo[] all = t.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic);
            Assert.That(all.Select(f => f.Name), Is.EqualTo(fields.Select(f => f.Field)));
            Assert.That(fields.Single().Offset, Is.Zero);
            return;
        }
        Assert.That(Marshal.SizeOf(t), Is.EqualTo(size), $"sizeof({t.Name})");
        Assert.That(SizeOfUnmanaged(t), Is.EqualTo(size), $"managed sizeof({t.Name})");
        foreach ((string field, int offset) in fields)
            Assert.That(Marshal.OffsetOf(t, field).ToInt32(), Is.EqualTo(offset), $"{t.Name}.{field}");
    }

    [Test]
    public void EverySharedStructHasAPin()
    {
        var missing = SharedStructs().Where(t => !s_pins.Keys.Any(k => (k.IsGenericType ? k.GetGenericTypeDefinition() : k) == t)).ToList();
        Assert.That(missing, Is.Empty, "shared structs without a layout pin: " + string.Join(", ", missing.Select(t => t.Name)));
    }

    [Test]
    public void EveryCoreStructIsSharedOrDeclaredProcessLocal()
    {
        var undecided = typeof(ShmemSegment).Assembly.GetTypes()
            .Where(t => t.IsValueType && !t.IsEnum && t.Namespace?.StartsWith("PgIpc", StringComparison.Ordinal) == true)
            .Where(t => !t.Name.Contains('<') && t.DeclaringType is null) // compiler-generated and fixed-buffer helpers
            .Where(t => t.GetCustomAttribute<SharedStructAttribute>() is null && !s_processLocal.Contains(t))
            .ToList();
        Assert.That(undecided, Is.Empty,
            "structs that must be marked [SharedStruct] (and pinned here) or listed as process-local: " + string.Join(", ", undecided.Select(t => t.Name)));
    }

    [Test]
    public void HotLocksArePaddedToACacheLine()
    {
        Assert.That(Marshal.SizeOf<SpinLockPadded>() % ShmemSize.CacheLineSize, Is.Zero);
        Assert.That(Marshal.OffsetOf<PgShmemHeader>(nameof(PgShmemHeader.AllocLock)).ToInt32() % 64, Is.Zero);
        Assert.That(Marshal.OffsetOf<PgShmemHeader>(nameof(PgShmemHeader.AttachedPids)).ToInt32() % 64, Is.Zero);
        Assert.That(Marshal.SizeOf<LWLockPadded>(), Is.EqualTo(ShmemSize.CacheLineSize));
        Assert.That(Marshal.SizeOf<PgIpc.Proc.PgProc>() % ShmemSize.CacheLineSize, Is.Zero);
        // The semaphore (posted by other processes) sits on a cache line of its own.
        Assert.That(Marshal.OffsetOf<PgIpc.Proc.PgProc>(nameof(PgIpc.Proc.PgProc.Semaphore)).ToInt32() % 64, Is.Zero);
        Assert.That(PgIpc.Platform.ProcSemaphoreStorage.MaxSize, Is.EqualTo(64));
    }

    private static int SizeOfUnmanaged(Type t)
        => (int)typeof(System.Runtime.CompilerServices.Unsafe).GetMethod(nameof(System.Runtime.CompilerServices.Unsafe.SizeOf))!
            .MakeGenericMethod(t).Invoke(null, null)!;
}
