/*-------------------------------------------------------------------------
 * WaitEventId.cs
 *   What a participant is waiting for, as shown to others (PostgreSQL's
 *   wait_event_info, the wait_event_type / wait_event columns of
 *   pg_stat_activity): a typed view of the 32-bit number kept in PGPROC.
 *
 * NOTES
 *   The number packs a class in its high byte and an id in its low 16 bits,
 *   as PostgreSQL's does, and the classes keep PostgreSQL's values (LWLock
 *   0x01 ... IO 0x0A). Class bytes 0x80 and above are free for a user's own
 *   classes; Extension (0x07) is PostgreSQL's class for extensions. The raw
 *   number stays a uint in the shared struct (PgProc.WaitEventInfo, written
 *   by the owner with an atomic store); this type is how the public API
 *   passes and reports it. Names come from WaitEventRegistry.cs.
 *
 *   Not to be confused with WaitEvents (the WL_* flags a wait asks for) or
 *   WaitEvent (one event a wait returned): PostgreSQL's names, kept.
 *
 *   Mirrors src/include/utils/wait_event.h (the class bytes) and
 *   wait_event_types.h.
 *-------------------------------------------------------------------------
 */
namespace PgIpc.Latch;

/// <summary>The class of a wait event: the high byte of <see cref="WaitEventId.Value"/> (PG_WAIT_*).</summary>
public enum WaitEventClass : byte
{
    /// <summary>Not waiting (wait_event_info 0).</summary>
    None = 0x00,
    /// <summary>Waiting for an LWLock (PG_WAIT_LWLOCK).</summary>
    LWLock = 0x01,
    /// <summary>Waiting for a heavyweight lock (PG_WAIT_LOCK).</summary>
    Lock = 0x03,
    /// <summary>Waiting for a buffer pin (PG_WAIT_BUFFERPIN).</summary>
    BufferPin = 0x04,
    /// <summary>A process idle in its main loop (PG_WAIT_ACTIVITY).</summary>
    Activity = 0x05,
    /// <summary>Waiting for a client socket (PG_WAIT_CLIENT).</summary>
    Client = 0x06,
    /// <summary>An extension's wait (PG_WAIT_EXTENSION): open to user registrations.</summary>
    Extension = 0x07,
    /// <summary>Waiting for another process (PG_WAIT_IPC).</summary>
    IPC = 0x08,
    /// <summary>Waiting for a timeout to expire (PG_WAIT_TIMEOUT).</summary>
    Timeout = 0x09,
    /// <summary>Waiting for I/O (PG_WAIT_IO).</summary>
    IO = 0x0A,
    /// <summary>The first class byte free for a user's own classes (0x80..0xFF).</summary>
    FirstUserClass = 0x80,
}

/// <summary>
/// What a participant is waiting for (PostgreSQL's wait_event_info): <see cref="Class"/> in the high byte,
/// <see cref="Id"/> in the low 16 bits. <c>default</c> (<see cref="None"/>) means not waiting on anything named.
/// </summary>
public readonly record struct WaitEventId(uint Value)
{
    /// <summary>Not waiting (0).</summary>
    public static readonly WaitEventId None;

    /// <summary>The event <paramref name="id"/> of class <paramref name="waitClass"/>.</summary>
    public WaitEventId(WaitEventClass waitClass, ushort id) : this(((uint)waitClass << 24) | id)
    {
    }

    /// <summary>The class (high byte).</summary>
    public WaitEventClass Class => (WaitEventClass)(Value >> 24);

    /// <summary>The id inside the class (low 16 bits).</summary>
    public ushort Id => (ushort)Value;

    /// <summary>True for <see cref="None"/>.</summary>
    public bool IsNone => Value == 0;

    /// <summary>The registered name (<see cref="WaitEventRegistry.NameOf"/>), or the number in hex when unknown.</summary>
    public string Name => WaitEventRegistry.NameOf(this);

    /// <inheritdoc/>
    public override string ToString() => Name;
}
