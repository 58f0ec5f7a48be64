/*-------------------------------------------------------------------------
 * WalWorkerCommands.cs
 *   The worker process's commands for the WAL tests.
 *
 * NOTES
 *   Commands (one line each, see TestWorker for the protocol):
 *     wal-attach                       -> ok             (the cluster of the attached segment, WAL module included)
 *     wal-commit <threads> <n>         -> ok <late>      (threads participants each commit n 100-byte records:
 *                                                         insert + XLogFlush; late = commits that returned with
 *                                                         FlushLsn before their end LSN)
 *     wal-incr-start <block> <file>    -> ok             (a thread loops: value + 1 at offset 100 of relation 7's
 *                                                         block, logged and flushed, then the value is written to
 *                                                         file (acknowledged); and the same value at offset 100 of
 *                                                         block + 1, never logged. Runs until the process is killed)
 *     wal-supervise <backend> <key> <dir> <k>
 *                                      -> ok <pid>       (this worker becomes a supervisor with a buffer pool and
 *                                                         WAL over <dir> (replaying what is there), starting k
 *                                                         permanent "wal-incr" children; the test kills it)
 *   Child mode (the test executable started by that supervisor):
 *     wal-incr <i>   loops until shutdown or the supervisor's death: block i of relation 7 at offset 100 takes
 *                    value + 1, logged and flushed, then acknowledged in <dir>/killloop/ack.<i> (written whole,
 *                    renamed); then the same value at offset 100 of block KillLoopUnlogged + i, never logged.
 *                    At start it writes <dir>/killloop/pid.<i> and compares the page with its acknowledgement:
 *                    a page behind it (an acknowledged update lost) leaves <dir>/killloop/lost.<i>.<pid>.
 *   The file path must not contain spaces.
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using System.Globalization;
using PgIpc.Buffers;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Wal;

namespace PgIpc.Tests.Wal;

internal static class WalWorkerCommands
{
    private static Cluster? s_cluster;

    public static bool TryExecute(string[] a, ShmemSegment? seg, out string reply)
    {
        reply = "";
        switch (a[0])
        {
            case "wal-attach":
                WalTests.RegisterTestRmgr();
                s_cluster = Cluster.AttachTo(seg ?? throw new InvalidOperationException("worker is not attached"));
                reply = "ok";
                return true;
            case "wal-commit":
            {
                int threads = Int(a[1]), n = Int(a[2]);
                XLog wal = Wal;
                int late = 0;
                TestThreads.Run(threads, _ =>
                {
                    using Participant me = s_cluster!.Procs.Join();
                    byte[] data = new byte[100];
                    for (int k = 0; k < n; k++)
                    {
                        WalRecordBuilder b = wal.BeginInsert();
                        b.RegisterData(data);
                        ulong end = b.Insert(me, WalTests.TestRmId, 0);
                        wal.Flush(me, end);
                        if (wal.FlushLsn < end)
                            Interlocked.Increment(ref late);
                    }
                });
                reply = $"ok {late}";
                return true;
            }
            case "wal-incr-start":
            {
                uint block = (uint)Int(a[1]);
                string file = a[2];
                XLog wal = Wal;
                BufferPool pool = s_cluster!.Get<BufferPool>();
                var t = new Thread(() =>
                {
                    using Participant me = s_cluster.Procs.Join();
                    for (long v = 1; ; v++)
                    {
                        ulong end = Set(pool, wal, me, block, v, log: true);
                        wal.Flush(me, end);
                        // Acknowledged: written whole then renamed, so a kill never leaves a half-written number.
                        File.WriteAllText(file + ".tmp", v.ToString(CultureInfo.InvariantCulture));
                        File.Move(file + ".tmp", file, overwrite: true);
                        Set(pool, wal, me, block + 1, v, log: false);
                    }
                }) { IsBackground = true, Name = "wal-incr" };
                t.Start();
                reply = "ok";
                return true;
            }
            case "wal-supervise":
                reply = Supervise(a[1], a[2], a[3], Int(a[4]));
                return true;
            default:
                return false;
        }
    }

    /// <summary>The first never-logged block of the kill loop (block KillLoopUnlogged + i belongs to child i).</summary>
    public const uint KillLoopUnlogged = 8;

    /// <summary>The kill loop's files (acknowledgements, pids, losses) under <paramref name="dataDir"/>.</summary>
    public static string KillLoopDir(string dataDir) => Path.Combine(dataDir, "killloop");

    private static Supervisor? s_supervisor;

    private static string Supervise(string backend, string key, string dir, int k)
    {
        WalTests.RegisterTestRmgr();
        ClusterBuilder b = new ClusterBuilder(key)
            .WithPlatform(PgIpc.Platform.PgIpcPlatform.Get(backend))
            .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 4, MaxAuxiliary: 2, MaxBackgroundWorkers: 4))
            .WithMaxChildren(4)
            .WithDataDirectory(dir)
            .WithLog(TextWriter.Null)
            .WithBufferPool(32)
            .WithWal(new WalOptions { SegmentSize = 1 << 20, MaxWalSize = 1L << 30 });
        for (int i = 0; i < k; i++)
            b.AddBackgroundWorker(Postmaster.PostmasterWorkerCommands.Spec($"incr {i}", backend, "wal-incr", i, restartIntervalMs: 0));
        s_supervisor = b.Build();
        s_supervisor.Start();
        return $"ok {Environment.ProcessId}";
    }

    /// <summary>The "wal-incr" child (see the header); returns its exit code.</summary>
    public static int RunIncrementChild(Cluster cluster, Participant me, int index)
    {
        WalTests.RegisterTestRmgr();
        XLog wal = cluster.Get<XLog>();
        BufferPool pool = cluster.Get<BufferPool>();
        string dir = KillLoopDir(wal.DataDirectory);
        string ack = Path.Combine(dir, $"ack.{index}");
        long acked = File.Exists(ack) ? long.Parse(File.ReadAllText(ack), CultureInfo.InvariantCulture) : 0; // nobody renames it now
        long v = Read(pool, me, (uint)index);
        if (v < acked)
            File.WriteAllText(Path.Combine(dir, $"lost.{index}.{Environment.ProcessId}"), $"block {index}: {v} on the page after recovery, {acked} acknowledged");
        WriteWhole(Path.Combine(dir, $"pid.{index}"), Environment.ProcessId);
        while (!cluster.ShutdownRequested && !cluster.Procs.IsSupervisorDead)
        {
            v++;
            wal.Flush(me, Set(pool, wal, me, (uint)index, v, log: true));
            WriteWhole(ack, v);
            Set(pool, wal, me, KillLoopUnlogged + (uint)index, v, log: false);
        }
        return 0;
    }

    /// <summary>Writes <paramref name="value"/> to a temp file and renames it over <paramref name="path"/>: a kill never leaves half a number.</summary>
    private static void WriteWhole(string path, long value)
    {
        File.WriteAllText(path + ".tmp", value.ToString(CultureInfo.InvariantCulture));
        for (int attempt = 0; ; attempt++)
        {
            try
            {
                File.Move(path + ".tmp", path, overwrite: true);
                return;
            }
            catch (IOException) when (attempt < 200)
            {
                Thread.Sleep(5); // Windows: the test has the file open for a moment
            }
        }
    }

    internal static long Read(BufferPool pool, Participant me, uint block)
    {
        int b = pool.ReadBuffer(me, 7, ForkNumber.Main, block);
        try
        {
            return BinaryPrimitives.ReadInt64LittleEndian(pool.GetPage(me, b)[100..]);
        }
        finally
        {
            pool.ReleaseBuffer(me, b);
        }
    }

    private static ulong Set(BufferPool pool, XLog wal, Participant me, uint block, long value, bool log)
    {
        int b = pool.ReadBuffer(me, 7, ForkNumber.Main, block);
        pool.LockBuffer(me, b, BufferLockMode.Exclusive);
        try
        {
            BinaryPrimitives.WriteInt64LittleEndian(pool.GetPage(me, b)[100..], value);
            pool.MarkBufferDirty(me, b);
            if (!log)
                return 0;
            Span<byte> d = stackalloc byte[12];
            BinaryPrimitives.WriteInt32LittleEndian(d, 100);
            BinaryPrimitives.WriteInt64LittleEndian(d[4..], value);
            WalRecordBuilder rb = wal.BeginInsert();
            rb.RegisterBuffer(0, pool, me, b);
            rb.RegisterBufData(0, d);
            return rb.Insert(me, WalTests.TestRmId, 0);
        }
        finally
        {
            pool.LockBuffer(me, b, BufferLockMode.Unlock);
            pool.ReleaseBuffer(me, b);
        }
    }

    private static XLog Wal => (s_cluster ?? throw new InvalidOperationException("wal-attach first")).Get<XLog>();

    private static int Int(string s) => int.Parse(s, CultureInfo.InvariantCulture);
}
