/*-------------------------------------------------------------------------
 * ShmemInitializer.cs
 *   The initialiser ShmemSegment.InitStruct runs on a new named structure
 *   before any other process can see it (ShmemIndex.cs).
 *-------------------------------------------------------------------------
 */
namespace PgIpc.Shmem;

/// <summary>Delegate that initialises a freshly allocated named structure (zero-filled on entry).</summary>
public delegate void ShmemInitializer(ShmemRegion region);
