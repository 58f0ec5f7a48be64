/*-------------------------------------------------------------------------
 * TempFileFullDiskTests.cs
 *   A temporary file on a full disk: the data directory is a real tmpfs
 *   mounted with 256 KiB of room (FullDiskTests.Mount). Writing a BufFile
 *   past it fails with a TempFileIOException that says the disk is full
 *   and names the file, never a crash; what was written before reads
 *   back, and closing the file deletes it and frees the space.
 *
 *   Needs root to mount; skipped elsewhere at discovery.
 *-------------------------------------------------------------------------
 */
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Tests.Buffers;
using PgIpc.Storage;
using PgIpc.Tests.Shmem;

namespace PgIpc.Tests.Storage;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
[OnlyAsRootOnLinux]
public sealed class TempFileFullDiskTests(string backend)
{
    private string? _mount;

    [TearDown]
    public void TearDown()
    {
        if (_mount is null)
            return;
        FullDiskTests.Unmount(_mount);
        _mount = null;
    }

    [Test]
    public void WritingATempFileOntoAFullDiskFailsClearly()
    {
        string dir = _mount = FullDiskTests.Mount(256);
        var space = TempFileSpace.ForDataDirectory(dir, segmentSize: 64 * 1024, platform: PgIpcPlatform.Get(backend));
        var block = new byte[BufFile.BlockSize];
        long written = 0;
        TempFileIOException? full = null;
        using (BufFile f = BufFile.CreateTemp(space))
        {
            for (int i = 0; i < 200 && full is null; i++)
            {
                block.AsSpan().Fill((byte)(i + 1));
                try
                {
                    f.Write(block);
                    written += block.Length;
                }
                catch (TempFileIOException e)
                {
                    full = e;
                }
            }
            Assert.That(full, Is.Not.Null, "256 KiB filled up before 1.6 MB");
            TestContext.Out.WriteLine($"{backend}: full after {written} bytes: {full!.Message}");
            Assert.That(full.DiskFull, Is.True);
            Assert.That(full.Message, Does.Contain("No space left on device").And.Contain(TempFileSpace.TempDirectoryOf(dir)));
            // What made it to the disk reads back.
            long onDisk = space.TemporaryFilesSize;
            Assert.That(onDisk, Is.GreaterThan(0));
            f.Seek(0);
            var back = new byte[BufFile.BlockSize];
            for (long at = 0; at + back.Length <= onDisk; at += back.Length)
            {
                f.ReadExactly(back);
                Assert.That(back[0] == (byte)(at / back.Length + 1) && back[^1] == back[0], Is.True, $"block at {at}");
            }
        }
        Assert.That(Directory.GetFileSystemEntries(TempFileSpace.TempDirectoryOf(dir)), Is.Empty, "closing deleted the file");
        Assert.That(space.TemporaryFilesSize, Is.Zero);
    }
}
