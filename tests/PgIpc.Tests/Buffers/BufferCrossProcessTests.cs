/*-------------------------------------------------------------------------
 * BufferCrossProcessTests.cs
 *   The buffer pool across real processes: a worker process reads through
 *   the shared pool a page the parent wrote and dirtied (never flushed),
 *   modifies it, and the parent sees the change.
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using System.Globalization;
using NUnit.Framework;
using PgIpc.Buffers;
using PgIpc.Platform;
using PgIpc.Proc;

namespace PgIpc.Tests.Buffers;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class BufferCrossProcessTests(string backend)
{
    private BufferCluster? _c;
    private ChildWorker? _worker;

    [TearDown]
    public void TearDown()
    {
        _worker?.Dispose();
        _worker = null;
        _c?.Dispose();
        _c = null;
    }

    [Test]
    public void WorkerReadsAndModifiesAPageThroughThePool()
    {
        BufferCluster c = _c = BufferCluster.Create(PgIpcPlatform.Get(backend), 32);
        void Parent(Action<Participant> body) => TestThreads.Run(1, _ =>
        {
            using Participant me = c.Procs.Join();
            body(me);
        });
        Parent(me =>
        {
            for (int i = 0; i < 3; i++)
            {
                int b = c.Pool.ReadBuffer(me, 11, ForkNumber.Main, BufferPool.NewBlock, ReadBufferMode.Extend);
                c.Pool.LockBuffer(me, b, BufferLockMode.Exclusive);
                BinaryPrimitives.WriteInt64LittleEndian(c.Pool.GetPage(me, b)[256..], 7000 + i);
                c.Pool.MarkBufferDirty(me, b);
                c.Pool.LockBuffer(me, b, BufferLockMode.Unlock);
                c.Pool.ReleaseBuffer(me, b);
            }
        });
        _worker = ChildWorker.Start(backend);
        _worker.Send($"attach {c.Segment.Handle}");
        _worker.Send($"buf-attach {c.Options.NumBuffers} {c.Options.DataDirectory}");
        string seen = _worker.Send("buf-read 11 1 256");
        _worker.Send("buf-write 11 2 256 123456789");
        long parentSees = 0;
        Parent(me =>
        {
            int b = c.Pool.ReadBuffer(me, 11, ForkNumber.Main, 2);
            c.Pool.LockBuffer(me, b, BufferLockMode.Shared);
            parentSees = BinaryPrimitives.ReadInt64LittleEndian(c.Pool.GetPage(me, b)[256..]);
            c.Pool.LockBuffer(me, b, BufferLockMode.Unlock);
            c.Pool.ReleaseBuffer(me, b);
        });
        _worker.Send("buf-leave");
        Assert.Multiple(() =>
        {
            Assert.That(long.Parse(seen, CultureInfo.InvariantCulture), Is.EqualTo(7001), "the worker saw the parent's dirty page");
            Assert.That(parentSees, Is.EqualTo(123456789), "the parent saw the worker's change");
        });
        // The worker flushed block 2: it is on disk with a good checksum.
        byte[] onDisk = new byte[BufferPool.BlockSize];
        // Share read and write: the pool (in this and the worker process) keeps the file open for writing.
        using (var f = new FileStream(Path.Combine(c.Options.DataDirectory, "11"), FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete))
        {
            f.Seek(2L * BufferPool.BlockSize, SeekOrigin.Begin);
            f.ReadExactly(onDisk);
        }
        Assert.That(BinaryPrimitives.ReadInt64LittleEndian(onDisk.AsSpan(256)), Is.EqualTo(123456789));
        Assert.That(PageChecksum.Verify(onDisk, 2, out _, out _), Is.True);
    }
}
