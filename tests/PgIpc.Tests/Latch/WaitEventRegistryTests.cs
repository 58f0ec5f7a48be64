/*-------------------------------------------------------------------------
 * WaitEventRegistryTests.cs
 *   The wait-event registry: the modules' built-in names, hex for unknown
 *   numbers, a user module's registration, duplicates refused; and the
 *   WaitEventId parts (class byte, id).
 *
 *   The registry is per process and never forgets, so each test registers
 *   numbers and names no other test (or a rerun) uses.
 *-------------------------------------------------------------------------
 */
using NUnit.Framework;
using PgIpc.Buffers;
using PgIpc.Latch;
using PgIpc.Mq;

namespace PgIpc.Tests.Latch;

public sealed class WaitEventRegistryTests
{
    private static int s_next = Random.Shared.Next(1, 30_000);

    /// <summary>A number in user class 0xC1 not used before in this process, and a name made from it.</summary>
    private static (WaitEventId Id, string Name) Fresh()
    {
        var id = new WaitEventId((WaitEventClass)0xC1, (ushort)Interlocked.Increment(ref s_next));
        return (id, $"TestEvent{id.Id}");
    }

    [Test]
    public void BuiltInEventsHaveTheirModulesNames()
    {
        Assert.That(WaitEventRegistry.NameOf(Checkpointer.WaitEventCheckpointerMain), Is.EqualTo("CheckpointerMain"));
        Assert.That(WaitEventRegistry.NameOf(Checkpointer.WaitEventCheckpointStart), Is.EqualTo("CheckpointStart"));
        Assert.That(WaitEventRegistry.NameOf(Checkpointer.WaitEventCheckpointDone), Is.EqualTo("CheckpointDone"));
        Assert.That(WaitEventRegistry.NameOf(Checkpointer.WaitEventCheckpointWriteDelay), Is.EqualTo("CheckpointWriteDelay"));
        Assert.That(WaitEventRegistry.NameOf(BackgroundWriter.WaitEventBgWriterMain), Is.EqualTo("BgWriterMain"));
        Assert.That(WaitEventRegistry.NameOf(BackgroundWriter.WaitEventBgWriterHibernate), Is.EqualTo("BgWriterHibernate"));
        Assert.That(WaitEventRegistry.NameOf(ShmMqHandle.SendWaitEvent), Is.EqualTo("MessageQueueSend"));
        Assert.That(ShmMqHandle.ReceiveWaitEvent.Name, Is.EqualTo("MessageQueueReceive"));
        Assert.That(WaitEventRegistry.ClassNameOf(Checkpointer.WaitEventCheckpointerMain), Is.EqualTo("Activity"));
        Assert.That(WaitEventRegistry.ClassNameOf(ShmMqHandle.SendWaitEvent), Is.EqualTo("IPC"));
        Assert.That(WaitEventRegistry.ClassNameOf(Checkpointer.WaitEventCheckpointWriteDelay), Is.EqualTo("Timeout"));
    }

    [Test]
    public void UnknownNumberShowsInHexAndNoneIsEmpty()
    {
        var unknown = new WaitEventId(0x0B00_0001);
        Assert.That(WaitEventRegistry.TryGetName(unknown, out _), Is.False);
        Assert.That(WaitEventRegistry.NameOf(unknown), Is.EqualTo("0x0B000001"));
        Assert.That(unknown.ToString(), Is.EqualTo("0x0B000001"));
        Assert.That(WaitEventRegistry.ClassNameOf(unknown), Is.EqualTo("0x0B"));
        Assert.That(WaitEventRegistry.NameOf(WaitEventId.None), Is.EqualTo(""));
        Assert.That(WaitEventRegistry.ClassNameOf(default), Is.EqualTo(""));
    }

    [Test]
    public void IdPacksClassInTheHighByteAndIdInTheLow16Bits()
    {
        var id = new WaitEventId(WaitEventClass.IPC, 0x1234);
        Assert.That(id.Value, Is.EqualTo(0x0800_1234u));
        Assert.That(id.Class, Is.EqualTo(WaitEventClass.IPC));
        Assert.That(id.Id, Is.EqualTo((ushort)0x1234));
        Assert.That(new WaitEventId(0x0800_1234), Is.EqualTo(id));
        Assert.That(WaitEventId.None.IsNone, Is.True);
        Assert.That(id.IsNone, Is.False);
    }

    [Test]
    public void UserModuleRegistersItsOwnEvents()
    {
        (WaitEventId id, string name) = Fresh();
        Assert.That(WaitEventRegistry.NameOf(id), Is.EqualTo($"0x{id.Value:X8}"), "unknown before");
        Assert.That(WaitEventRegistry.Register(id, name), Is.EqualTo(id));
        Assert.That(WaitEventRegistry.NameOf(id), Is.EqualTo(name));
        Assert.That(id.Name, Is.EqualTo(name));
        Assert.That(WaitEventRegistry.TryGetName(id, out string got), Is.True);
        Assert.That(got, Is.EqualTo(name));

        // The Extension class is open to users too.
        var ext = new WaitEventId(WaitEventClass.Extension, id.Id);
        WaitEventRegistry.Register(ext, name);
        Assert.That(ext.Name, Is.EqualTo(name), "same name in another class is another event");
    }

    [Test]
    public void DuplicateRegistrationIsAnError()
    {
        (WaitEventId id, string name) = Fresh();
        WaitEventRegistry.Register(id, name);
        var sameNumber = Assert.Throws<DuplicateWaitEventException>(() => WaitEventRegistry.Register(id, name + "Other"));
        Assert.That(sameNumber!.Message, Does.Contain(name));
        Assert.That(sameNumber.Event, Is.EqualTo(id));
        (WaitEventId other, _) = Fresh();
        var sameName = Assert.Throws<DuplicateWaitEventException>(() => WaitEventRegistry.Register(other, name));
        Assert.That(sameName!.Message, Does.Contain($"0x{id.Value:X8}"));
        Assert.That(WaitEventRegistry.NameOf(other), Is.EqualTo($"0x{other.Value:X8}"), "a refused registration leaves nothing");
        Assert.That(WaitEventRegistry.NameOf(id), Is.EqualTo(name), "the first registration stands");
    }

    [Test]
    public void UsersCannotRegisterInBuiltInClassesZeroOrBlankNames()
    {
        Assert.Throws<ArgumentException>(() => WaitEventRegistry.Register(new WaitEventId(WaitEventClass.IPC, 0x7777), "Mine"));
        Assert.Throws<ArgumentException>(() => WaitEventRegistry.Register(WaitEventId.None, "Nothing"));
        Assert.Throws<ArgumentException>(() => WaitEventRegistry.Register(Fresh().Id, " "));
    }
}
