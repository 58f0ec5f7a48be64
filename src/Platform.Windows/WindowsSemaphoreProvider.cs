/*-------------------------------------------------------------------------
 * WindowsSemaphoreProvider.cs
 *   PGSemaphore on Windows: one named kernel semaphore object per index.
 *
 * NOTES
 *   Semaphore i of set <name> is "Local\pgipc.<name>.sem<i>" (the session
 *   namespace, as the segment's mapping), created with count 0 and maximum
 *   int.MaxValue. Create fails when a name already exists: a kernel object
 *   lives exactly as long as somebody holds a handle, so an existing name is
 *   a live collision, never a leftover. Attach opens each with SYNCHRONIZE |
 *   SEMAPHORE_MODIFY_STATE. The shared storage is unused.
 *
 *   Each process holds its handles as SafeHandles; Dispose closes them and
 *   Destroy is the same (the object goes with its last handle). Waits are
 *   WaitForSingleObject, non-alertable, so they are never interrupted; the
 *   P/Invokes take the SafeHandle, so Unlock (ReleaseSemaphore) allocates
 *   nothing and a handle cannot be closed under a waiter. Reset takes units
 *   with zero-timeout waits until one times out.
 *
 *   Mirrors PostgreSQL's port/win32_sema.c (which uses unnamed semaphores
 *   inherited by its children; PgIpc's processes are not all children, so
 *   they find the objects by name).
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using Win = PgIpc.Platform.Windows.Interop.Windows;

namespace PgIpc.Platform.Windows;

/// <summary>Named Windows semaphore objects, one per index (no shared storage).</summary>
internal sealed class WindowsSemaphoreProvider : IProcSemaphoreProvider
{
    internal const string NamePrefix = @"Local\pgipc.";

    public int StorageSize => 0;

    public IProcSemaphoreSet Create(string name, nint storage, int stride, int count)
    {
        ProcSemaphoreArgs.Validate(name, storage, stride, count, 0, 1);
        return new WindowsSemaphoreSet(name, Open(name, count, create: true));
    }

    public IProcSemaphoreSet Attach(string name, nint storage, int stride, int count)
    {
        ProcSemaphoreArgs.Validate(name, storage, stride, count, 0, 1);
        return new WindowsSemaphoreSet(name, Open(name, count, create: false));
    }

    internal static string SemName(string name, int index) => $"{NamePrefix}{name}.sem{index}";

    private static unsafe SafeSemaphoreHandle[] Open(string name, int count, bool create)
    {
        var handles = new SafeSemaphoreHandle[count];
        for (int i = 0; i < count; i++)
        {
            string semName = SemName(name, i);
            nint h = create
                ? Win.CreateSemaphoreW(null, 0, int.MaxValue, semName)
                : Win.OpenSemaphoreW(Win.SYNCHRONIZE | Win.SEMAPHORE_MODIFY_STATE, 0, semName);
            int err = Marshal.GetLastPInvokeError();
            if (h != 0)
                handles[i] = new SafeSemaphoreHandle(h);
            if (h == 0 || (create && err == Win.ERROR_ALREADY_EXISTS))
            {
                // Undo: closing this call's handles removes the objects it created (nobody else has them yet).
                for (int j = 0; j <= i; j++)
                    handles[j]?.Dispose();
                if (h != 0)
                    throw Win.Exception("CreateSemaphoreW", err, $"{semName} already exists: another set has the name \"{name}\" ({i} of {count})");
                throw Win.Exception(create ? "CreateSemaphoreW" : "OpenSemaphoreW", err,
                    $"{(create ? "creating" : "opening")} {semName} ({i} of {count} of set \"{name}\")");
            }
        }
        return handles;
    }
}

/// <summary>A semaphore object handle; CloseHandle on release.</summary>
internal sealed class SafeSemaphoreHandle : SafeHandle
{
    /// <summary>For the interop marshaller.</summary>
    public SafeSemaphoreHandle() : base(0, ownsHandle: true)
    {
    }

    public SafeSemaphoreHandle(nint h) : base(0, ownsHandle: true) => SetHandle(h);

    public override bool IsInvalid => handle == 0 || handle == -1;

    protected override bool ReleaseHandle() => Win.CloseHandle(handle) != 0;
}

/// <summary>This process's handles to the semaphores of one set.</summary>
internal sealed unsafe class WindowsSemaphoreSet : IProcSemaphoreSet
{
    private readonly string _name;
    private readonly SafeSemaphoreHandle[] _handles;
    private volatile bool _closed;

    public WindowsSemaphoreSet(string name, SafeSemaphoreHandle[] handles)
    {
        _name = name;
        _handles = handles;
    }

    public int Count => _handles.Length;

    private SafeSemaphoreHandle Handle(int index)
    {
        ProcSemaphoreArgs.CheckIndex(index, Count);
        ProcSemaphoreArgs.CheckOpen(_closed, _name);
        return _handles[index];
    }

    public void Lock(int index) => Lock(index, -1);

    public bool HasNativeTimedWait => true;

    public bool Lock(int index, int timeoutMs)
        => Wait(Handle(index), index, timeoutMs < 0 ? Win.INFINITE : (uint)timeoutMs);

    public bool TryLock(int index) => Wait(Handle(index), index, 0);

    private bool Wait(SafeSemaphoreHandle h, int index, uint ms)
    {
        uint r = Win.WaitForSingleObject(h, ms);
        if (r == Win.WAIT_OBJECT_0)
            return true;
        if (r == Win.WAIT_TIMEOUT)
            return false;
        int err = Marshal.GetLastPInvokeError();
        if (r != Win.WAIT_FAILED)
            throw new PgIpcOsException("WaitForSingleObject", (int)r, $"0x{r:x}", $"unexpected result waiting on semaphore {index} of set \"{_name}\"");
        throw Win.Exception("WaitForSingleObject", err, $"waiting on semaphore {index} of set \"{_name}\"");
    }

    public void Unlock(int index)
    {
        SafeSemaphoreHandle h = Handle(index);
        if (Win.ReleaseSemaphore(h, 1, null) == 0)
        {
            int err = Marshal.GetLastPInvokeError();
            Environment.FailFast($"ReleaseSemaphore failed: {Win.ErrorName(err)} ({err}) on semaphore {index} of set \"{_name}\"");
        }
    }

    public void Reset(int index)
    {
        SafeSemaphoreHandle h = Handle(index);
        while (Wait(h, index, 0))
        {
        }
    }

    /// <summary>A semaphore object goes with its last handle: closing this process's is all there is to do.</summary>
    public void Destroy()
    {
        ProcSemaphoreArgs.CheckOpen(_closed, _name);
        Dispose();
    }

    public void Dispose()
    {
        _closed = true;
        foreach (SafeSemaphoreHandle h in _handles)
            h.Dispose();
    }
}
