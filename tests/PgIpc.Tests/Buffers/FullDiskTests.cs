/*-------------------------------------------------------------------------
 * FullDiskTests.cs
 *   "A full disk" (issue 13): the data directory is a real tmpfs mounted
 *   with a few pages of room. Extending a relation past it fails with a
 *   clear I/O error naming the file, and nothing already written is lost:
 *   every page extended before the error keeps its contents through a
 *   checkpoint, the pool stays usable, and once room is made (the tmpfs is
 *   remounted bigger) extension goes on where it stopped.
 *
 *   Needs root to mount; skipped elsewhere at discovery.
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using System.Diagnostics;
using NUnit.Framework;
using PgIpc.Buffers;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Tests.Shmem;

namespace PgIpc.Tests.Buffers;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
[OnlyAsRootOnLinux]
public sealed class FullDiskTests(string backend)
{
    private const uint Rel = 7001;
    private string? _mount;

    [TearDown]
    public void TearDown()
    {
        if (_mount is null)
            return;
        Unmount(_mount);
        _mount = null;
    }

    /// <summary>Unmounts a tmpfs made by <see cref="Mount"/> and removes its mount point.</summary>
    internal static void Unmount(string dir)
    {
        Run("umount", dir);
        Directory.Delete(dir);
    }

    internal static void Run(string file, string args)
    {
        using Process p = Process.Start(new ProcessStartInfo(file, args) { UseShellExecute = false, RedirectStandardError = true })!;
        Assert.That(p.WaitForExit(30_000), Is.True, $"{file} {args} finished");
        Assert.That(p.ExitCode, Is.Zero, $"{file} {args}: {p.StandardError.ReadToEnd()}");
    }

    private string MountTmpfs(int kib) => _mount = Mount(kib);

    /// <summary>Mounts a tmpfs of <paramref name="kib"/> KiB, mode 0700, on a new directory (root only); returns it.</summary>
    internal static string Mount(int kib)
    {
        string dir = Path.Combine(Path.GetTempPath(), $"pgipc-full-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        Run("mount", $"-t tmpfs -o size={kib}k,mode=0700 tmpfs {dir}");
        return dir;
    }

    private static long MarkerOf(long block) => 0x5EED_0000_0000 + block;

    [Test]
    public void ExtendingPastAFullDiskFailsClearlyAndLosesNothing()
    {
        string dir = MountTmpfs(128); // 16 pages of 8 KiB
        using BufferCluster c = BufferCluster.Create(PgIpcPlatform.Get(backend), 64, dataDirectory: dir);
        TestThreads.Run(1, _ =>
        {
            using Participant me = c.Procs.Join();
            long extended = 0;
            Exception? full = null;
            for (int i = 0; i < 64 && full is null; i++)
            {
                try
                {
                    int b = c.Pool.ReadBuffer(me, Rel, ForkNumber.Main, BufferPool.NewBlock, ReadBufferMode.Extend);
                    c.Pool.LockBuffer(me, b, BufferLockMode.Exclusive);
                    BinaryPrimitives.WriteInt64LittleEndian(c.Pool.GetPage(me, b)[512..], MarkerOf(extended));
                    c.Pool.MarkBufferDirty(me, b);
                    c.Pool.LockBuffer(me, b, BufferLockMode.Unlock);
                    c.Pool.ReleaseBuffer(me, b);
                    extended++;
                }
                catch (SmgrException ex)
                {
                    full = ex;
                }
            }
            Assert.That(full, Is.Not.Null, "the tmpfs filled up before 64 pages");
            TestContext.Out.WriteLine($"{backend}: full after {extended} pages: {full!.Message}");
            Assert.That(full.Message, Does.Contain("space").IgnoreCase.And.Contain(dir), "the error names the file and says the disk is full");
            Assert.That(extended, Is.GreaterThan(0));
            Assert.That(me.HeldLockCount, Is.Zero, "the failed extension left no lock held");

            // Nothing written before the error is lost: a checkpoint writes every page (their blocks exist on disk).
            c.Pool.FlushAllBuffers(me);
            for (long blk = 0; blk < extended; blk++)
                Assert.That(ReadMarker(c, me, blk), Is.EqualTo(MarkerOf(blk)), $"block {blk}");

            // Room again: extension goes on after the last block that made it.
            Run("mount", $"-o remount,size=1024k {dir}");
            for (int i = 0; i < 8; i++)
            {
                int b = c.Pool.ReadBuffer(me, Rel, ForkNumber.Main, BufferPool.NewBlock, ReadBufferMode.Extend);
                c.Pool.LockBuffer(me, b, BufferLockMode.Exclusive);
                long blk = c.Pool.GetTag(me, b).BlockNumber;
                BinaryPrimitives.WriteInt64LittleEndian(c.Pool.GetPage(me, b)[512..], MarkerOf(blk));
                c.Pool.MarkBufferDirty(me, b);
                c.Pool.LockBuffer(me, b, BufferLockMode.Unlock);
                c.Pool.ReleaseBuffer(me, b);
            }
            c.Pool.FlushAllBuffers(me);
            long blocks = c.Pool.Smgr.NBlocks(Rel, ForkNumber.Main);
            Assert.That(blocks, Is.GreaterThanOrEqualTo(extended + 8));
            for (long blk = 0; blk < blocks; blk++)
            {
                long m = ReadMarker(c, me, blk);
                Assert.That(m == MarkerOf(blk) || m == 0, Is.True, $"block {blk} holds its own marker or is a zero page, not {m:x}");
            }
        });
    }

    private static long ReadMarker(BufferCluster c, Participant me, long block)
    {
        int b = c.Pool.ReadBuffer(me, Rel, ForkNumber.Main, block);
        c.Pool.LockBuffer(me, b, BufferLockMode.Shared);
        long m = BinaryPrimitives.ReadInt64LittleEndian(c.Pool.GetPage(me, b)[512..]);
        c.Pool.LockBuffer(me, b, BufferLockMode.Unlock);
        c.Pool.ReleaseBuffer(me, b);
        return m;
    }
}
