/*-------------------------------------------------------------------------
 * DsmSegment.cs
 *   One dynamic shared memory segment as mapped in this process
 *   (PostgreSQL's dsm_segment).
 *
 * NOTES
 *   Each DsmSegment is one mapping and holds one reference in the control
 *   table; several in one process (one per thread, say) are independent.
 *   Detach runs the on-detach callbacks in reverse order of registration
 *   (while the memory is still mapped, so a callback can tidy up shared
 *   state, e.g. detach a shm_mq), unmaps, then drops the reference; the last
 *   reference removes the OS object.
 *
 *   Pin gives the segment a reference of its own, so it outlives every
 *   mapping until Unpin (dsm_pin_segment). PinMapping keeps this process's
 *   mapping until the process detaches from the cluster (dsm_pin_mapping):
 *   Dispose, which a `using` block calls, then leaves it mapped; an explicit
 *   Detach still detaches.
 *
 *   Only handles, spans and offsets leave this class; segments map at
 *   different addresses in different processes, so store offsets in them.
 *
 *   Mirrors src/backend/storage/ipc/dsm.c (dsm_segment, dsm_detach,
 *   on_dsm_detach, dsm_pin_mapping, dsm_pin_segment).
 *-------------------------------------------------------------------------
 */
using PgIpc.Platform;

namespace PgIpc.Dsm;

/// <summary>A dynamic shared memory segment mapped in this process.</summary>
public sealed unsafe class DsmSegment : IDisposable
{
    private readonly DsmRegistry _registry;
    private readonly int _slot;
    private IMappedSegment? _mapping;
    private readonly byte* _base;
    private readonly List<Action<DsmSegment>> _onDetach = [];
    private int _state; // 0 attached, 2 detaching (callbacks running, still mapped), 1 detached
    private int _mappingPinned;
    private int _segmentPinned;

    internal DsmSegment(DsmRegistry registry, IMappedSegment mapping, uint handle, long size, DsmImplementation kind, int slot)
    {
        _registry = registry;
        _mapping = mapping;
        _base = (byte*)mapping.BaseAddress;
        Shmem.LiveMappings.Add(_base, size);
        Handle = handle;
        Size = size;
        Implementation = kind;
        _slot = slot;
    }

    /// <summary>
    /// Creates a zero-filled segment of <paramref name="size"/> bytes (dsm_create). With
    /// <see cref="DsmCreateFlags.NoFail"/>, returns null instead of throwing when the control table is full or the OS
    /// has no room; otherwise throws <see cref="DsmSlotsExhaustedException"/> or <see cref="DsmNoSpaceException"/>.
    /// </summary>
    public static DsmSegment? Create(DsmRegistry registry, long size, DsmCreateFlags flags = DsmCreateFlags.None)
    {
        ArgumentNullException.ThrowIfNull(registry);
        return registry.Create(size, flags);
    }

    /// <summary>Maps the segment <paramref name="handle"/> names, from any process of the cluster (dsm_attach).</summary>
    public static DsmSegment Attach(DsmRegistry registry, uint handle)
    {
        ArgumentNullException.ThrowIfNull(registry);
        return registry.Attach(handle);
    }

    /// <summary>What other processes pass to <see cref="Attach"/>.</summary>
    public uint Handle { get; }

    /// <summary>Bytes the segment was created with.</summary>
    public long Size { get; }

    /// <summary>How the segment was made.</summary>
    public DsmImplementation Implementation { get; }

    /// <summary>True until <see cref="Detach"/>.</summary>
    public bool IsAttached => Volatile.Read(ref _state) == 0;

    /// <summary>True after <see cref="PinMapping"/>.</summary>
    public bool IsMappingPinned => Volatile.Read(ref _mappingPinned) != 0;

    /// <summary>Address of the mapping in this process, for native callers; valid until Detach. Prefer <see cref="AsSpan"/>.</summary>
    internal nint Address => (nint)Pointer;

    internal byte* Pointer
    {
        get
        {
            ThrowIfDetached();
            return _base;
        }
    }

    /// <summary>The segment's bytes.</summary>
    public Span<byte> AsSpan()
    {
        if (Size > int.MaxValue)
            throw new InvalidOperationException($"dynamic shared memory segment {Handle} of {Size} bytes is too large for a Span; use AsSpan<T> or Slice");
        return new Span<byte>(Pointer, (int)Size);
    }

    /// <summary><paramref name="length"/> bytes at <paramref name="offset"/>.</summary>
    public Span<byte> Slice(long offset, int length)
    {
        if (offset < 0 || length < 0 || offset > Size - length)
            throw new ArgumentOutOfRangeException(nameof(offset), offset, $"{length} bytes at offset {offset} do not fit in dynamic shared memory segment {Handle} of {Size} bytes");
        return new Span<byte>(Pointer + offset, length);
    }

    /// <summary>The segment as an array of <typeparamref name="T"/>.</summary>
    public Span<T> AsSpan<T>() where T : unmanaged
    {
        long count = Size / sizeof(T);
        if (count > int.MaxValue)
            throw new InvalidOperationException($"dynamic shared memory segment {Handle} holds {count} elements of {typeof(T).Name}, more than a Span can address");
        return new Span<T>(Pointer, (int)count);
    }

    /// <summary>
    /// Registers <paramref name="callback"/> to run when this mapping is detached, before it is unmapped, in reverse
    /// order of registration (on_dsm_detach).
    /// </summary>
    public void OnDetach(Action<DsmSegment> callback)
    {
        ArgumentNullException.ThrowIfNull(callback);
        ThrowIfDetached();
        lock (_onDetach)
            _onDetach.Add(callback);
    }

    /// <summary>Removes a callback registered with <see cref="OnDetach"/> (cancel_on_dsm_detach). False when absent.</summary>
    public bool CancelOnDetach(Action<DsmSegment> callback)
    {
        lock (_onDetach)
            return _onDetach.Remove(callback);
    }

    /// <summary>Keeps the segment alive with no mapping at all until <see cref="DsmRegistry.Unpin"/> (dsm_pin_segment).</summary>
    public void Pin()
    {
        ThrowIfDetached();
        if (Interlocked.Exchange(ref _segmentPinned, 1) != 0)
            throw new InvalidOperationException($"dynamic shared memory segment {Handle} is already pinned");
        try
        {
            _registry.Pin(_slot, Handle, Implementation);
        }
        catch
        {
            Volatile.Write(ref _segmentPinned, 0);
            throw;
        }
    }

    /// <summary>Keeps this mapping until the process detaches from the cluster; Dispose then does nothing (dsm_pin_mapping).</summary>
    public void PinMapping()
    {
        ThrowIfDetached();
        Volatile.Write(ref _mappingPinned, 1);
    }

    /// <summary>
    /// Runs the on-detach callbacks (last registered first), unmaps, and drops this mapping's reference; the last
    /// reference removes the segment. Idempotent. Callback failures are thrown together after the detach is complete.
    /// </summary>
    public void Detach()
    {
        if (Interlocked.CompareExchange(ref _state, 2, 0) != 0)
            return;
        List<Exception>? errors = null;
        while (true)
        {
            Action<DsmSegment> cb;
            lock (_onDetach)
            {
                if (_onDetach.Count == 0)
                    break;
                cb = _onDetach[^1];
                _onDetach.RemoveAt(_onDetach.Count - 1);
            }
            try { cb(this); }
            catch (Exception ex) { (errors ??= []).Add(ex); }
        }
        Volatile.Write(ref _state, 1);
        _registry.Forget(this);
        Shmem.LiveMappings.Remove(_base);
        _mapping!.Dispose();
        _mapping = null;
        _registry.DropReference(_slot, Handle);
        if (errors is not null)
            throw new AggregateException($"on-detach callbacks of dynamic shared memory segment {Handle} failed", errors);
    }

    /// <summary>Detaches unless the mapping is pinned (see <see cref="PinMapping"/>).</summary>
    public void Dispose()
    {
        if (!IsMappingPinned)
            Detach();
    }

    private void ThrowIfDetached()
    {
        if (Volatile.Read(ref _state) == 1)
            throw new ObjectDisposedException(nameof(DsmSegment), $"dynamic shared memory segment {Handle} is no longer attached in this process");
    }

    /// <inheritdoc/>
    public override string ToString() => $"dynamic shared memory segment {Handle} ({Size} bytes, {Implementation})";
}
