/*-------------------------------------------------------------------------
 * WaitEventRegistry.cs
 *   Names of wait events: number -> name, per class (what pg_stat_activity
 *   shows as wait_event_type / wait_event).
 *
 * NOTES
 *   PostgreSQL generates its built-in names from one list at build time
 *   (wait_event_names.txt) and lets an extension ask for a name at run time
 *   (WaitEventExtensionNew). Here each module registers its own built-in
 *   events when the Core assembly is loaded (a [ModuleInitializer] beside the
 *   module's constants: Checkpointer, BackgroundWriter, ShmMqHandle), so no
 *   second list of the subsystems exists and every process that can show a
 *   participant's wait event (the demo, `pgipc inspect`) knows the names
 *   without touching the modules first.
 *
 *   A user's module registers its events with Register, in the Extension
 *   class or a class of its own (0x80 and above); the built-in classes are
 *   the modules' own. A number or a name registered twice in a class is an
 *   error (two modules claiming one number would show each other's waits
 *   under the wrong name). The registry is per process: a name is only known
 *   where its module registered it; elsewhere the number shows in hex.
 *
 *   Lookups take a lock: names are for diagnostics, not for wait paths (a
 *   wait stores the number only).
 *
 *   Mirrors src/backend/utils/activity/wait_event.c (pgstat_get_wait_event,
 *   WaitEventExtensionNew).
 *-------------------------------------------------------------------------
 */
using System.Globalization;

namespace PgIpc.Latch;

/// <summary>Wait-event names, by number, per class (pgstat_get_wait_event). Thread-safe.</summary>
public static class WaitEventRegistry
{
    private static readonly Lock s_lock = new();
    private static readonly Dictionary<uint, string> s_names = [];
    private static readonly Dictionary<(WaitEventClass, string), uint> s_byName = [];

    /// <summary>
    /// Registers <paramref name="name"/> for <paramref name="id"/>, a user module's event: its class must be
    /// <see cref="WaitEventClass.Extension"/> or a user class (<see cref="WaitEventClass.FirstUserClass"/> and above).
    /// Throws <see cref="DuplicateWaitEventException"/> when the number or the name is already registered in the class.
    /// Returns <paramref name="id"/>.
    /// </summary>
    public static WaitEventId Register(WaitEventId id, string name)
    {
        if (id.Class != WaitEventClass.Extension && id.Class < WaitEventClass.FirstUserClass)
            throw new ArgumentException($"class {id.Class} of 0x{id.Value:X8} is a built-in class; use Extension or a class from 0x80", nameof(id));
        return Add(id, name);
    }

    /// <summary>Registers a built-in module's event (any class but None): called from the modules' initializers.</summary>
    internal static WaitEventId RegisterBuiltin(WaitEventId id, string name) => Add(id, name);

    private static WaitEventId Add(WaitEventId id, string name)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        if (id.IsNone)
            throw new ArgumentException("wait event 0 means \"not waiting\" and has no name", nameof(id));
        lock (s_lock)
        {
            if (s_names.TryGetValue(id.Value, out string? existing))
                throw new DuplicateWaitEventException(id, name, $"the number is registered as \"{existing}\"");
            if (s_byName.TryGetValue((id.Class, name), out uint other))
                throw new DuplicateWaitEventException(id, name, $"the name is registered for 0x{other:X8}");
            s_names.Add(id.Value, name);
            s_byName.Add((id.Class, name), id.Value);
        }
        return id;
    }

    /// <summary>The name registered for <paramref name="id"/>, if any.</summary>
    public static bool TryGetName(WaitEventId id, out string name)
    {
        lock (s_lock)
            return s_names.TryGetValue(id.Value, out name!);
    }

    /// <summary>
    /// The name of <paramref name="id"/> (pgstat_get_wait_event): the registered one ("CheckpointerMain"), the empty
    /// string for <see cref="WaitEventId.None"/>, else the number in hex ("0x0B000001").
    /// </summary>
    public static string NameOf(WaitEventId id)
    {
        if (id.IsNone)
            return "";
        return TryGetName(id, out string name) ? name : "0x" + id.Value.ToString("X8", CultureInfo.InvariantCulture);
    }

    /// <summary>The name of the class of <paramref name="id"/> (pgstat_get_wait_event_type): "IPC", "Activity", or hex for a user class.</summary>
    public static string ClassNameOf(WaitEventId id) => id.Class switch
    {
        WaitEventClass.None => "",
        WaitEventClass c when Enum.IsDefined(c) && c != WaitEventClass.FirstUserClass => c.ToString(),
        WaitEventClass c => "0x" + ((byte)c).ToString("X2", CultureInfo.InvariantCulture),
    };
}
