/*-------------------------------------------------------------------------
 * SeqAssert.cs
 *   Comparison of long number sequences without NUnit's collection
 *   constraint.
 *
 * NOTES
 *   Is.EqualTo on two sequences of thousands of numbers boxes every element
 *   and creates garbage enough for many collections; under Wine (the Windows
 *   leg) the runtime's finalization of dynamic methods during such
 *   collections has crashed the test host ("Internal CLR error" in
 *   DynamicResolver.DestroyScout.Finalize). This compares without boxing
 *   and reports the first difference.
 *-------------------------------------------------------------------------
 */
using NUnit.Framework;

namespace PgIpc.Tests;

internal static class SeqAssert
{
    /// <summary>Fails unless <paramref name="actual"/> equals <paramref name="expected"/> element by element.</summary>
    public static void Equal(IEnumerable<uint> actual, IEnumerable<uint> expected, string what = "")
    {
        using IEnumerator<uint> a = actual.GetEnumerator();
        using IEnumerator<uint> e = expected.GetEnumerator();
        long i = 0;
        while (true)
        {
            bool hasA = a.MoveNext(), hasE = e.MoveNext();
            if (!hasA && !hasE)
                return;
            if (hasA != hasE)
                Assert.Fail($"{what}: sequences differ in length: at index {i} the {(hasA ? "expected" : "actual")} sequence ended");
            if (a.Current != e.Current)
                Assert.Fail($"{what}: at index {i} expected {e.Current}, got {a.Current}");
            i++;
        }
    }
}
