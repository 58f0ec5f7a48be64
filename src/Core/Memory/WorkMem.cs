/*-------------------------------------------------------------------------
 * WorkMem.cs
 *   work_mem, hash_mem_multiplier and maintenance_work_mem as PostgreSQL
 *   makes them: named budgets a memory consumer (a sort, a hash table)
 *   compares with what its memory context holds, to decide when to spill
 *   to temporary files.
 *
 * NOTES
 *   In PostgreSQL these are settings read by each consumer, not limits the
 *   allocator enforces: tuplesort.c sets allowedMem = work_mem * 1024 (or
 *   maintenance_work_mem for index builds and VACUUM) and checks LACKMEM()
 *   as tuples arrive, spilling a sorted run when memory is short;
 *   nodeHash.c / nodeAgg.c take get_hash_memory_limit() = work_mem * 1024
 *   * hash_mem_multiplier. What they compare with is the memory their
 *   context holds (MemoryContextMemAllocated(ctx, true) in nodeAgg.c's
 *   hash_agg_check_limits). MemoryBudget.IsExceededBy does that
 *   comparison; a consumer calls it after adding to its context and
 *   spills when it says so. (MemoryContext's own Limit is a different,
 *   hard tool: an allocation past it throws.)
 *
 *   Ranges and defaults as guc_tables.c: work_mem 64 kB .. MAX_KILOBYTES,
 *   default 4 MB; hash_mem_multiplier 1.0 .. 1000.0, default 2.0;
 *   maintenance_work_mem 1 MB .. MAX_KILOBYTES, default 64 MB (MAX_KILOBYTES
 *   = INT_MAX on 64-bit platforms). Settings are per process, as GUCs are:
 *   WorkMemSettings.Current is one immutable value a thread replaces
 *   whole.
 *-------------------------------------------------------------------------
 */
namespace PgIpc.Memory;

/// <summary>A named byte budget (work_mem, hash_mem, maintenance_work_mem) a consumer checks to decide when to spill.</summary>
/// <param name="Name">The setting it comes from, for messages.</param>
/// <param name="Bytes">The budget in bytes.</param>
public readonly record struct MemoryBudget(string Name, long Bytes)
{
    /// <summary>True when <paramref name="context"/> and its subtree hold more than the budget (time to spill).</summary>
    public bool IsExceededBy(MemoryContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return context.MemAllocated(recurse: true) > Bytes;
    }

    /// <summary>Bytes left before <paramref name="context"/> passes the budget (negative once past it).</summary>
    public long RemainingFor(MemoryContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return Bytes - context.MemAllocated(recurse: true);
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Name} = {Bytes / 1024} kB";
}

/// <summary>The memory settings of a process: work_mem, hash_mem_multiplier, maintenance_work_mem (see the file notes).</summary>
public sealed record WorkMemSettings
{
    /// <summary>MAX_KILOBYTES on 64-bit platforms.</summary>
    public const int MaxKilobytes = int.MaxValue;

    private static WorkMemSettings s_current = new();

    /// <summary>The settings of PostgreSQL's defaults: work_mem 4 MB, hash_mem_multiplier 2.0, maintenance_work_mem 64 MB.</summary>
    public WorkMemSettings(int workMemKiB = 4096, double hashMemMultiplier = 2.0, int maintenanceWorkMemKiB = 65536)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(workMemKiB, 64);
        ArgumentOutOfRangeException.ThrowIfLessThan(maintenanceWorkMemKiB, 1024);
        if (!(hashMemMultiplier >= 1.0 && hashMemMultiplier <= 1000.0))
            throw new ArgumentOutOfRangeException(nameof(hashMemMultiplier), hashMemMultiplier, "hash_mem_multiplier must be between 1.0 and 1000.0");
        WorkMemKiB = workMemKiB;
        HashMemMultiplier = hashMemMultiplier;
        MaintenanceWorkMemKiB = maintenanceWorkMemKiB;
    }

    /// <summary>This process's settings (replaced whole, as a SET would).</summary>
    public static WorkMemSettings Current
    {
        get => Volatile.Read(ref s_current);
        set => Volatile.Write(ref s_current, value ?? throw new ArgumentNullException(nameof(value)));
    }

    /// <summary>work_mem in KiB.</summary>
    public int WorkMemKiB { get; }

    /// <summary>hash_mem_multiplier.</summary>
    public double HashMemMultiplier { get; }

    /// <summary>maintenance_work_mem in KiB.</summary>
    public int MaintenanceWorkMemKiB { get; }

    /// <summary>The budget of a sort or any other work_mem consumer.</summary>
    public MemoryBudget WorkMem => new("work_mem", WorkMemKiB * 1024L);

    /// <summary>get_hash_memory_limit: work_mem x hash_mem_multiplier, for hash tables (hash joins, hash aggregation).</summary>
    public MemoryBudget HashMem
    {
        get
        {
            double limit = WorkMemKiB * 1024.0 * HashMemMultiplier;
            return new("hash_mem", limit >= long.MaxValue ? long.MaxValue : (long)limit);
        }
    }

    /// <summary>The budget of maintenance work (index builds, vacuum).</summary>
    public MemoryBudget MaintenanceWorkMem => new("maintenance_work_mem", MaintenanceWorkMemKiB * 1024L);
}
