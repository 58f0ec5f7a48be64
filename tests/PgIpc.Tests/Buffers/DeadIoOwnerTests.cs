/*-------------------------------------------------------------------------
 * DeadIoOwnerTests.cs
 *   A participant that waits for a buffer's I/O whose owner process was
 *   killed mid-I/O does not wait forever: the owner's pid is recorded with
 *   the I/O, and the I/O of an owner that is gone is aborted on its behalf
 *   and redone by the waiter (issue 13, item 7).
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using System.Diagnostics;
using NUnit.Framework;
using PgIpc.Buffers;
using PgIpc.Platform;
using PgIpc.Proc;

namespace PgIpc.Tests.Buffers;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed unsafe class DeadIoOwnerTests(string backend)
{
    private const uint Rel = 4711;
    private const long Marker = 0x1234_5678_9ABC;

    /// <summary>The pid of a process that has exited and been reaped.</summary>
    private static int DeadPid()
    {
        var psi = OperatingSystem.IsWindows() ? new ProcessStartInfo("cmd.exe", "/c exit 0") : new ProcessStartInfo("true");
        psi.UseShellExecute = false;
        using Process p = Process.Start(psi)!;
        Assert.That(p.WaitForExit(30_000), Is.True);
        return p.Id;
    }

    [Test]
    public void AReaderWaitingOnTheIOOfAKilledProcessRedoesIt()
    {
        using BufferCluster c = BufferCluster.Create(PgIpcPlatform.Get(backend), 16);
        int id = -1;
        TestThreads.Run(1, _ =>
        {
            using Participant me = c.Procs.Join();
            BufferStress.Create(c.Pool, me, Rel, 1);
            int b = c.Pool.ReadBuffer(me, Rel, ForkNumber.Main, 0);
            c.Pool.LockBuffer(me, b, BufferLockMode.Exclusive);
            BinaryPrimitives.WriteInt64LittleEndian(c.Pool.GetPage(me, b)[256..], Marker);
            c.Pool.MarkBufferDirty(me, b);
            c.Pool.LockBuffer(me, b, BufferLockMode.Unlock);
            c.Pool.ReleaseBuffer(me, b);
            c.Pool.FlushAllBuffers(me);
            id = b - 1;
        });

        // As a process killed while reading the page in leaves the buffer: not valid, I/O in progress, its owner gone.
        BufferDesc* d = c.Pool.Descriptor(id);
        d->IoOwnerPid = DeadPid();
        uint st = Volatile.Read(ref d->StateWord);
        Volatile.Write(ref d->StateWord, (st & ~BufferDesc.State.Valid) | BufferDesc.State.IoInProgress);

        long seen = 0;
        Exception? error = null;
        var reader = new Thread(() =>
        {
            try
            {
                using Participant me = c.Procs.Join();
                int b = c.Pool.ReadBuffer(me, Rel, ForkNumber.Main, 0);
                c.Pool.LockBuffer(me, b, BufferLockMode.Shared);
                seen = BinaryPrimitives.ReadInt64LittleEndian(c.Pool.GetPage(me, b)[256..]);
                c.Pool.LockBuffer(me, b, BufferLockMode.Unlock);
                c.Pool.ReleaseBuffer(me, b);
            }
            catch (Exception e)
            {
                error = e;
            }
        }) { IsBackground = true, Name = "reader behind a dead I/O" };
        reader.Start();
        Assert.That(reader.Join(Poll.Patience), Is.True, "the reader is still waiting for the dead process's I/O");
        Assert.That(error, Is.Null);
        Assert.That(seen, Is.EqualTo(Marker), "the I/O was redone: the page read back from its file");
        Assert.That(d->IoOwnerPid, Is.Zero, "the redone I/O ended normally");
    }
}
