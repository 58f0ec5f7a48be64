/*-------------------------------------------------------------------------
 * OnDetachCallbacks.cs
 *   The callbacks a process runs when it detaches from (or destroys) a
 *   segment, before the mapping goes away.
 *
 * NOTES
 *   As PostgreSQL's on_shmem_exit list: run in reverse order of
 *   registration, each once. Every callback runs even when an earlier one
 *   throws; the failures are kept and raised together by ShmemSegment
 *   once the mapping is gone, so a failing callback never leaves the
 *   segment half-detached. Process-local.
 *
 *   Mirrors on_shmem_exit / shmem_exit in src/backend/storage/ipc/ipc.c.
 *-------------------------------------------------------------------------
 */
namespace PgIpc.Shmem;

/// <summary>A segment's on-detach callbacks in this process (see file notes).</summary>
internal sealed class OnDetachCallbacks
{
    private readonly List<Action<bool>> _callbacks = [];

    public void Add(Action<bool> callback)
    {
        lock (_callbacks)
            _callbacks.Add(callback);
    }

    /// <summary>Runs and forgets every callback, last registered first. Returns their failures, or null.</summary>
    public AggregateException? RunAll(bool destroying, string segmentId)
    {
        Action<bool>[] callbacks;
        lock (_callbacks)
        {
            callbacks = [.. _callbacks];
            _callbacks.Clear();
        }
        List<Exception>? errors = null;
        for (int i = callbacks.Length - 1; i >= 0; i--)
        {
            try
            {
                callbacks[i](destroying);
            }
            catch (Exception ex)
            {
                // Run every callback; report the failures together once the segment is gone.
                (errors ??= []).Add(ex);
            }
        }
        return errors is null ? null : new AggregateException($"on-detach callbacks of shared memory segment {segmentId} failed", errors);
    }
}
