/*-------------------------------------------------------------------------
 * TestWorker.cs
 *   The child process cross-process tests start ("PgIpc.Tests worker").
 *
 * NOTES
 *   Protocol: one command per line on stdin, one reply line on stdout:
 *   "ok[ <values>]" or "error <ExceptionType>: <message>". End of stdin
 *   makes the worker detach and exit 0, so a parent that dies takes its
 *   workers with it. Commands:
 *     pid                              -> ok <pid>
 *     create <key> <size>              -> ok <handle>       (becomes creator)
 *     attach <handle>                  -> ok
 *     attach-key <key>                 -> ok <handle>
 *     initstruct <name> <size>         -> ok <found> <offset>
 *     write <name> <byteOffset> <long> -> ok                (volatile store)
 *     read <name> <byteOffset>         -> ok <long>         (volatile load)
 *     wait <name> <byteOffset> <long> <ms> -> ok | error Timeout
 *     add <name> <byteOffset> <count>  -> ok                (count interlocked increments)
 *     hash-get <name> <cap> <parts> <key> -> ok <found> <value> (SharedHash<long,long>)
 *     lock-add <name> <count>          -> ok  (count increments of word 1 under the spinlock in word 0)
 *     poke <offset> <hex bytes>        -> ok  (writes the bytes at that segment offset: a corrupting process)
 *     attached                         -> ok <count>
 *     sem-attach <name> <struct> <count> [named] -> ok   (attach the semaphore set <name> whose storage is
 *                                         the structure <struct>, stride ProcSemaphoreStorage.MaxSize;
 *                                         "named": the posix backend's named-semaphore mode)
 *     sem-unlock <i>                   -> ok
 *     sem-lock <i> <timeoutMs>         -> ok true | ok false (timed out)
 *     sem-pingpong <n>                 -> ok  (n rounds of Lock(1) then Unlock(0); error if a Lock waits 10 s)
 *     sem-detach                       -> ok  (dispose the set)
 *     lw-*                             participant and LWLock commands: Sync/LockWorkerCommands.cs
 *     cl-*                             latch, ProcSignal, barrier, PMSignal, CV: Latch/CoreLatchWorkerCommands.cs
 *     lm-*                             heavyweight lock manager: Lmgr/LmWorkerCommands.cs
 *     wal-*                            write-ahead log: Wal/WalWorkerCommands.cs
 *     st-*                             shared statistics, activity, memory-context log: Stats/StatsWorkerCommands.cs
 *     detach | destroy                 -> ok
 *     exit <code>                      -> (exits)
 *   The backend is chosen with "--backend <name>" before the commands.
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using PgIpc.Platform;
using PgIpc.Shmem;

namespace PgIpc.Tests;

internal static class TestWorker
{
    public const string Verb = "worker";

    /// <summary>The semaphore set of the sem-* commands.</summary>
    private static IProcSemaphoreSet? s_sems;

    public static int Run(string[] args)
    {
        int parallelExit = PgIpc.Tests.Parallel.ParallelWorkerMain.TryRun(args); if (parallelExit >= 0) return parallelExit; // --run-child parallel-*: a parallel worker (Parallel/)
        int lmExit = PgIpc.Tests.Lmgr.LmWorkerCommands.TryRunChild(args); if (lmExit >= 0) return lmExit; // --run-lm-child: a supervised lock holder (Lmgr/)
        int childExit = PgIpc.Tests.Postmaster.PostmasterWorkerCommands.TryRunChild(args); // --run-child: a cluster's child (Postmaster/)
        if (childExit >= 0)
            return childExit;
        string backend = "";
        for (int i = 0; i + 1 < args.Length; i++)
            if (args[i] == "--backend")
                backend = args[i + 1];
        IPgIpcPlatform platform = backend.Length > 0 ? PgIpcPlatform.Get(backend) : PgIpcPlatform.Current;
        ShmemSegment? seg = null;
        TextWriter output = Console.Out;
        string? line;
        while ((line = Console.In.ReadLine()) is not null)
        {
            string[] a = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (a.Length == 0)
                continue;
            string reply;
            try
            {
                reply = Execute(a, platform, ref seg);
            }
            catch (Exception ex)
            {
                reply = $"error {ex.GetType().Name}: {ex.Message.ReplaceLineEndings(" ")}";
            }
            output.WriteLine(reply);
            output.Flush();
        }
        seg?.Dispose();
        return 0;
    }

    private static unsafe string Execute(string[] a, IPgIpcPlatform platform, ref ShmemSegment? seg)
    {
        switch (a[0])
        {
            case "pid":
                return $"ok {Environment.ProcessId}";
            case "create":
                seg = ShmemSegment.Create(a[1], Long(a[2]), platform);
                return $"ok {seg.Handle}";
            case "attach":
                seg = ShmemSegment.Attach(ShmemHandle.Parse(a[1]), platform);
                return "ok";
            case "attach-key":
                seg = ShmemSegment.AttachByKey(a[1], platform);
                return $"ok {seg.Handle}";
            case "initstruct":
            {
                ShmemRegion r = Seg(seg).InitStruct(a[1], Long(a[2]), out bool found);
                return $"ok {(found ? "true" : "false")} {r.Offset}";
            }
            case "write":
                Volatile.Write(ref Slot(seg, a[1], a[2]), Long(a[3]));
                return "ok";
            case "read":
                return $"ok {Volatile.Read(ref Slot(seg, a[1], a[2]))}";
            case "wait":
            {
                ref long slot = ref Slot(seg, a[1], a[2]);
                long want = Long(a[3]);
                long deadline = Environment.TickCount64 + Long(a[4]);
                while (Volatile.Read(ref slot) != want)
                {
                    if (Environment.TickCount64 > deadline)
                        throw new TimeoutException($"value stayed {Volatile.Read(ref slot)}, wanted {want}");
                    Thread.Sleep(1);
                }
                return "ok";
            }
            case "add":
            {
                ref long slot = ref Slot(seg, a[1], a[2]);
                long n = Long(a[3]);
                for (long i = 0; i < n; i++)
                    Interlocked.Increment(ref slot);
                return "ok";
            }
            case "hash-get":
            {
                var h = SharedHash<long, long>.Init(Seg(seg), a[1], (int)Long(a[2]), (int)Long(a[3]), out _);
                long key = Long(a[4]);
                bool found = h.TryFind(key, SharedHash<long, long>.GetHashCode(key), out long v);
                return $"ok {(found ? "true" : "false")} {v}";
            }
            case "lock-add":
            {
                // Word 0 of the structure is a spinlock; word 1 a plain counter it protects.
                ref long w0 = ref Slot(seg, a[1], "0");
                ref int lockWord = ref System.Runtime.CompilerServices.Unsafe.As<long, int>(ref w0);
                ref long counter = ref Slot(seg, a[1], "8");
                long n = Long(a[2]);
                for (long i = 0; i < n; i++)
                {
                    PgIpc.Sync.SLock.Acquire(ref lockWord);
                    counter++;
                    PgIpc.Sync.SLock.Release(ref lockWord);
                }
                return "ok";
            }
            case "sem-attach":
            {
                if (!Seg(seg).TryFindStruct(a[2], out ShmemRegion r))
                    throw new ArgumentException($"no shared structure \"{a[2]}\"");
                IProcSemaphoreProvider provider = a.Length > 4 && a[4] == "named"
                    ? new PgIpc.Platform.Posix.PosixSemaphoreProvider(forceNamed: true)
                    : platform.Semaphores;
                s_sems?.Dispose();
                s_sems = provider.Attach(a[1], (nint)r.Pointer, ProcSemaphoreStorage.MaxSize, (int)Long(a[3]));
                return "ok";
            }
            case "sem-unlock":
                Sems().Unlock((int)Long(a[1]));
                return "ok";
            case "sem-lock":
                return Sems().Lock((int)Long(a[1]), (int)Long(a[2])) ? "ok true" : "ok false";
            case "sem-pingpong":
            {
                IProcSemaphoreSet sems = Sems();
                long n = Long(a[1]);
                for (long i = 0; i < n; i++)
                {
                    if (!sems.Lock(1, 10_000))
                        throw new TimeoutException($"round {i} of {n}: semaphore 1 was not posted within 10 s");
                    sems.Unlock(0);
                }
                return "ok";
            }
            case "sem-detach":
                Sems().Dispose();
                s_sems = null;
                return "ok";
            case "poke":
            {
                // Another process's scribble (Shmem/CorruptionTests.cs): raw bytes at a segment offset, bounds-checked here.
                ShmemSegment s = Seg(seg);
                long at = Long(a[1]);
                byte[] bytes = Convert.FromHexString(a[2]);
                if (at < 0 || at > s.TotalSize - bytes.Length)
                    throw new ArgumentOutOfRangeException(nameof(a), at, $"poke outside the segment's {s.TotalSize} bytes");
                bytes.CopyTo(new Span<byte>(s.Base + at, bytes.Length));
                Interlocked.MemoryBarrier();
                return "ok";
            }
            case "attached":
                return $"ok {Seg(seg).AttachedProcessCount()}";
            case "detach":
                Seg(seg).Dispose();
                seg = null;
                return "ok";
            case "destroy":
                Seg(seg).Destroy();
                seg = null;
                return "ok";
            case "exit":
                Environment.Exit(int.Parse(a[1], CultureInfo.InvariantCulture));
                return "ok";
            default:
                // Participant and LWLock commands (lw-*): see Sync/LockWorkerCommands.cs.
                if (PgIpc.Tests.Sync.LockWorkerCommands.TryExecute(a, seg, out string lwReply))
                    return lwReply;
                if (PgIpc.Tests.Latch.CoreLatchWorkerCommands.TryExecute(a, seg, out string clReply))
                    return clReply;
                if (PgIpc.Tests.Platform.LatchWorkerCommands.TryExecute(a, seg, out string latchReply)) return latchReply; // latch-*, lifeline, interrupt-*: Platform/LatchWorkerCommands.cs
                if (PgIpc.Tests.Sinval.SinvalWorkerCommands.TryExecute(a, seg, out string siReply)) return siReply; // si-*: Sinval/SinvalWorkerCommands.cs
                if (PgIpc.Tests.Mq.MqWorkerCommands.TryExecute(a, seg, out string mqReply)) return mqReply; // mq-*: Mq/MqWorkerCommands.cs
                if (PgIpc.Tests.Dsm.DsmWorkerCommands.TryExecute(a, seg, out string dsmReply)) return dsmReply; // dsm-*: Dsm/DsmWorkerCommands.cs
                if (PgIpc.Tests.Postmaster.PostmasterWorkerCommands.TryExecute(a, seg, out string pmReply)) return pmReply; // pm-*: Postmaster/PostmasterWorkerCommands.cs
                if (PgIpc.Tests.Buffers.BufferWorkerCommands.TryExecute(a, seg, out string bufReply)) return bufReply; // buf-*: Buffers/BufferWorkerCommands.cs
                if (PgIpc.Tests.Lmgr.LmWorkerCommands.TryExecute(a, seg, out string lmReply)) return lmReply; // lm-*: Lmgr/LmWorkerCommands.cs
                if (PgIpc.Tests.Wal.WalWorkerCommands.TryExecute(a, seg, out string walReply)) return walReply; // wal-*: Wal/WalWorkerCommands.cs
                if (PgIpc.Tests.Stats.StatsWorkerCommands.TryExecute(a, seg, out string stReply)) return stReply; // st-*: Stats/StatsWorkerCommands.cs
                if (PgIpc.Tests.Shmem.PosixCreationWorkerCommands.TryExecute(a, out string pcReply)) return pcReply; // shm-creating: Shmem/PosixUnfinishedCreationTests.cs
                if (PgIpc.Tests.Proc.DetachWorkerCommands.TryExecute(a, platform, out string dtReply)) return dtReply; // detach-*: Proc/DetachWorkerCommands.cs
                throw new ArgumentException($"unknown worker command \"{a[0]}\"");
        }
    }

    private static IProcSemaphoreSet Sems()
        => s_sems ?? throw new InvalidOperationException("worker has no semaphore set (sem-attach first)");

    private static ShmemSegment Seg(ShmemSegment? seg)
        => seg ?? throw new InvalidOperationException("worker is not attached");

    private static ref long Slot(ShmemSegment? seg, string name, string offset)
    {
        if (!Seg(seg).TryFindStruct(name, out ShmemRegion r))
            throw new ArgumentException($"no shared structure \"{name}\"");
        long off = Long(offset);
        return ref r.AsSpan<long>()[(int)(off / 8)];
    }

    private static long Long(string s) => long.Parse(s, CultureInfo.InvariantCulture);
}
