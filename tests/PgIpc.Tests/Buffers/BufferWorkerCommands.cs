/*-------------------------------------------------------------------------
 * BufferWorkerCommands.cs
 *   The worker process's commands for the buffer pool tests.
 *
 * NOTES
 *   Commands (one line each, see TestWorker for the protocol):
 *     buf-attach <nbuffers> <datadir>            -> ok            (BufferPool.Init on the attached segment; joins)
 *     buf-read <rel> <block> <offset>            -> ok <value>    (reads the long at offset of the page)
 *     buf-write <rel> <block> <offset> <value>   -> ok            (stores it under the exclusive content lock,
 *                                                                  marks the buffer dirty and flushes it)
 *     buf-incr <rel> <pages> <iters> <seed>      -> ok            (iters random read-modify-writes: +1 to the
 *                                                                  long at offset 128 of a random page, under the
 *                                                                  exclusive content lock)
 *     buf-leave                                  -> ok
 *   The data directory must not contain spaces (the command line is split on them).
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using System.Globalization;
using PgIpc.Buffers;
using PgIpc.Proc;
using PgIpc.Shmem;

namespace PgIpc.Tests.Buffers;

internal static class BufferWorkerCommands
{
    private static BufferCluster? s_cluster;
    private static Participant? s_me;

    public static bool TryExecute(string[] a, ShmemSegment? seg, out string reply)
    {
        reply = "";
        switch (a[0])
        {
            case "buf-attach":
                s_cluster = BufferCluster.Attach(seg ?? throw new InvalidOperationException("worker is not attached"),
                    new BufferPoolOptions(Int(a[1]), a[2]));
                s_me = s_cluster.Procs.Join();
                reply = "ok";
                return true;
            case "buf-read":
            {
                BufferPool pool = Pool;
                int b = pool.ReadBuffer(Me, (uint)Int(a[1]), ForkNumber.Main, Int(a[2]));
                pool.LockBuffer(Me, b, BufferLockMode.Shared);
                long v = BinaryPrimitives.ReadInt64LittleEndian(pool.GetPage(Me, b)[Int(a[3])..]);
                pool.LockBuffer(Me, b, BufferLockMode.Unlock);
                pool.ReleaseBuffer(Me, b);
                reply = $"ok {v}";
                return true;
            }
            case "buf-write":
            {
                BufferPool pool = Pool;
                int b = pool.ReadBuffer(Me, (uint)Int(a[1]), ForkNumber.Main, Int(a[2]));
                pool.LockBuffer(Me, b, BufferLockMode.Exclusive);
                BinaryPrimitives.WriteInt64LittleEndian(pool.GetPage(Me, b)[Int(a[3])..], long.Parse(a[4], CultureInfo.InvariantCulture));
                pool.MarkBufferDirty(Me, b);
                pool.FlushBuffer(Me, b);
                pool.LockBuffer(Me, b, BufferLockMode.Unlock);
                pool.ReleaseBuffer(Me, b);
                reply = "ok";
                return true;
            }
            case "buf-incr":
                BufferStress.Increment(Pool, Me, (uint)Int(a[1]), Int(a[2]), Int(a[3]), Int(a[4]));
                reply = "ok";
                return true;
            case "buf-leave":
                s_me?.Dispose();
                s_me = null;
                s_cluster?.Pool.Dispose();
                s_cluster = null;
                reply = "ok";
                return true;
            default:
                return false;
        }
    }

    private static BufferPool Pool => (s_cluster ?? throw new InvalidOperationException("buf-attach first")).Pool;

    private static Participant Me => s_me ?? throw new InvalidOperationException("buf-attach first");

    private static int Int(string s) => int.Parse(s, CultureInfo.InvariantCulture);
}
