/*-------------------------------------------------------------------------
 * TargetTable.cs
 *   The targets of the report, parsed from perf/README.md's "Targets"
 *   table (the file is embedded in the program at build time, so a
 *   published copy, e.g. under Wine, has the same targets).
 *
 * NOTES
 *   A row of that table is `| `row id` | `bound` | why |`; the bound is
 *   either on the ratio to the row's peer, measured in the same round
 *   ("ratio >= 2", "ratio <= 0.5"), or on the figure itself in a unit
 *   ("< 1 us", "<= 50 ns"). The ratio bound is checked against the median
 *   of the per-round ratios, the absolute one against the figure's median.
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using System.Reflection;
using System.Text.RegularExpressions;

namespace PgIpc.Perf.Report;

internal sealed record Target(string Text, bool OnRatio, string Op, double Bound, string? Unit)
{
    /// <summary>Whether <paramref name="value"/> (a ratio, or the figure in <see cref="Unit"/>) meets the bound.</summary>
    public bool Met(double value) => Op switch
    {
        ">=" => value >= Bound,
        ">" => value > Bound,
        "<=" => value <= Bound,
        _ => value < Bound,
    };
}

internal static partial class TargetTable
{
    public const string ResourceName = "PgIpc.Perf.README.md";

    [GeneratedRegex(@"^\|\s*`([^`]+)`\s*\|\s*`([^`]+)`\s*\|")]
    private static partial Regex RowPattern();

    [GeneratedRegex(@"^(ratio\s+)?(<=|>=|<|>)\s*([0-9.]+)\s*([A-Za-z/]+)?$")]
    private static partial Regex BoundPattern();

    /// <summary>The target of <paramref name="rowId"/>: an exact id, else a pattern whose "*" stands for one dot-separated part.</summary>
    public static Target? For(Dictionary<string, Target> targets, string rowId)
    {
        if (targets.TryGetValue(rowId, out Target? t))
            return t;
        foreach ((string key, Target value) in targets)
        {
            if (!key.Contains('*', StringComparison.Ordinal))
                continue;
            string pattern = "^" + string.Join("[^.]+", key.Split('*').Select(Regex.Escape)) + "$";
            if (Regex.IsMatch(rowId, pattern))
                return value;
        }
        return null;
    }

    /// <summary>Every target of the embedded perf/README.md, by row id.</summary>
    public static Dictionary<string, Target> Load()
    {
        var result = new Dictionary<string, Target>();
        using Stream? s = Assembly.GetExecutingAssembly().GetManifestResourceStream(ResourceName);
        if (s is null)
            return result;
        using var reader = new StreamReader(s);
        bool inTargets = false;
        for (string? line = reader.ReadLine(); line is not null; line = reader.ReadLine())
        {
            if (line.StartsWith("## ", StringComparison.Ordinal))
                inTargets = line.StartsWith("## Targets", StringComparison.Ordinal);
            if (!inTargets)
                continue;
            Match m = RowPattern().Match(line);
            if (!m.Success)
                continue;
            Match b = BoundPattern().Match(m.Groups[2].Value.Trim());
            if (!b.Success)
                throw new FormatException($"perf/README.md: target \"{m.Groups[2].Value}\" of {m.Groups[1].Value} is neither \"ratio OP N\" nor \"OP N unit\"");
            bool onRatio = b.Groups[1].Success;
            string? unit = b.Groups[4].Success ? b.Groups[4].Value : null;
            result[m.Groups[1].Value] = new Target(m.Groups[2].Value.Trim(), onRatio, b.Groups[2].Value,
                double.Parse(b.Groups[3].Value, CultureInfo.InvariantCulture), unit);
        }
        return result;
    }
}
