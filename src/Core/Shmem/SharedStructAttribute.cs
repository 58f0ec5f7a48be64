/*-------------------------------------------------------------------------
 * SharedStructAttribute.cs
 *   Marks a struct that lives in shared memory.
 *
 * NOTES
 *   A struct with this mark is read by several processes, possibly built
 *   from different compilations, so its size and field offsets are part of
 *   the segment's layout version. tests/Layout pins every marked struct and
 *   fails when a marked struct has no pin, or when a struct in Core is
 *   neither marked nor declared process-local.
 *-------------------------------------------------------------------------
 */
namespace PgIpc.Shmem;

/// <summary>This struct is laid out in shared memory; its layout is pinned by a test.</summary>
[AttributeUsage(AttributeTargets.Struct, Inherited = false)]
public sealed class SharedStructAttribute : Attribute;
