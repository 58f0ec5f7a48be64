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
            default:
                return false;
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
