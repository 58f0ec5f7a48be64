/*-------------------------------------------------------------------------
 * ReportWriter.cs
 *   Writes a `report` run as perf/results/<yyyy-MM-dd>-<os>-<cpu>.md and
 *   .json: per section a table of figure, peer, ratio and target.
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace PgIpc.Perf.Report;

internal static class ReportWriter
{
    /// <summary>The verdict of one row: "met", "not met", "skipped" or "" (no target).</summary>
    public static (string Verdict, string TargetText, double Checked) Judge(ReportData data, ReportRow row, Target? target)
    {
        if (row.Skipped is not null)
            return ("skipped", target?.Text ?? "", double.NaN);
        if (target is null)
            return ("", "", double.NaN);
        if (target.OnRatio && row.PeerMissing is not null)
            return ("skipped", target.Text, double.NaN);
        double value = target.OnRatio ? Stats.Median(data.Ratios(row)) : data.Get(row.FigureId)?.Median ?? double.NaN;
        if (double.IsNaN(value))
            return ("not measured", target.Text, value);
        if (!target.OnRatio && target.Unit is not null && data.Get(row.FigureId)?.Unit != target.Unit)
            return ($"unit mismatch ({data.Get(row.FigureId)?.Unit} vs {target.Unit})", target.Text, value);
        return (target.Met(value) ? "met" : "**not met**", target.Text, value);
    }

    private static string Cell(Figure? f)
    {
        if (f is null || f.ByRound.Count == 0)
            return "—";
        return f.ByRound.Count == 1
            ? $"{Stats.Num(f.Median)} {f.Unit}"
            : $"{Stats.Num(f.Median)} [{Stats.Num(f.Min)}..{Stats.Num(f.Max)}] {f.Unit}";
    }

    private static string RatioCell(double[] r)
    {
        if (r.Length == 0)
            return "—";
        return r.Length == 1
            ? $"{Stats.Num(r[0])}x"
            : $"**{Stats.Num(Stats.Median(r))}x** [{Stats.Num(r.Min())}..{Stats.Num(r.Max())}]";
    }

    public static string Markdown(ReportData data, Dictionary<string, Target> targets, IEnumerable<string> header)
    {
        var sb = new StringBuilder();
        foreach (string h in header)
            sb.AppendLine(h);
        sb.AppendLine();
        int met = 0, missed = 0, skipped = 0;
        foreach (IGrouping<string, ReportRow> section in data.Rows.GroupBy(r => r.Section))
        {
            sb.AppendLine($"## {section.Key}");
            sb.AppendLine();
            sb.AppendLine("| row | figure: median [min..max] over rounds | peer | peer: median [min..max] | ratio per round: median [min..max] | target | met? |");
            sb.AppendLine("| --- | ---: | --- | ---: | ---: | --- | --- |");
            foreach (ReportRow row in section)
            {
                Target? t = TargetTable.For(targets, row.Id);
                (string verdict, string targetText, _) = Judge(data, row, t);
                if (verdict == "met")
                    met++;
                else if (verdict == "**not met**")
                    missed++;
                else if (verdict == "skipped")
                    skipped++;
                if (row.Skipped is not null)
                {
                    sb.AppendLine($"| {row.Label} (`{row.Id}`) | skipped: {row.Skipped} | | | | {targetText} | skipped |");
                    continue;
                }
                sb.AppendLine($"| {row.Label} (`{row.Id}`) | {Cell(data.Get(row.FigureId))} | {row.PeerLabel ?? ""} | " +
                    $"{(row.PeerMissing is not null ? $"skipped: {row.PeerMissing}" : row.PeerId is null ? "" : Cell(data.Get(row.PeerId)))} | {RatioCell(data.Ratios(row))} | {targetText} | {verdict} |");
            }
            sb.AppendLine();
        }
        sb.AppendLine($"Targets: {met} met, {missed} not met, {skipped} skipped.");
        sb.AppendLine();
        if (data.Notes.Count > 0)
        {
            sb.AppendLine("## Notes");
            sb.AppendLine();
            foreach (string n in data.Notes)
                sb.AppendLine($"- {n}");
            sb.AppendLine();
        }
        if (data.RawOutputs.Count > 0)
        {
            sb.AppendLine("## Raw output of the two-process harnesses");
            sb.AppendLine();
            foreach ((string title, string text) in data.RawOutputs)
            {
                sb.AppendLine($"<details><summary>{title}</summary>");
                sb.AppendLine();
                sb.AppendLine("```");
                sb.AppendLine(text.TrimEnd());
                sb.AppendLine("```");
                sb.AppendLine();
                sb.AppendLine("</details>");
                sb.AppendLine();
            }
        }
        return sb.ToString();
    }

    public static string Json(ReportData data, Dictionary<string, Target> targets, Dictionary<string, string> meta)
    {
        var rows = data.Rows.Select(row =>
        {
            Target? t = TargetTable.For(targets, row.Id);
            (string verdict, string targetText, double checkedValue) = Judge(data, row, t);
            Figure? f = data.Get(row.FigureId);
            Figure? p = row.PeerId is null ? null : data.Get(row.PeerId);
            double[] r = data.Ratios(row);
            return new Dictionary<string, object?>
            {
                ["section"] = row.Section,
                ["id"] = row.Id,
                ["label"] = row.Label,
                ["skipped"] = row.Skipped,
                ["peerSkipped"] = row.PeerMissing,
                ["unit"] = f?.Unit,
                ["values"] = f?.ByRound.ToDictionary(kv => kv.Key.ToString(CultureInfo.InvariantCulture), kv => kv.Value),
                ["median"] = Finite(f?.Median),
                ["peer"] = row.PeerLabel,
                ["peerUnit"] = p?.Unit,
                ["peerValues"] = p?.ByRound.ToDictionary(kv => kv.Key.ToString(CultureInfo.InvariantCulture), kv => kv.Value),
                ["peerMedian"] = Finite(p?.Median),
                ["ratios"] = r,
                ["ratioMedian"] = Finite(r.Length == 0 ? null : Stats.Median(r)),
                ["target"] = targetText.Length == 0 ? null : targetText,
                ["verdict"] = verdict.Replace("*", "", StringComparison.Ordinal),
                ["checkedValue"] = Finite(checkedValue),
            };
        });
        var doc = new Dictionary<string, object?>
        {
            ["meta"] = meta,
            ["rows"] = rows.ToList(),
            ["notes"] = data.Notes,
        };
        return JsonSerializer.Serialize(doc, new JsonSerializerOptions { WriteIndented = true });
    }

    private static double? Finite(double? v) => v is { } x && double.IsFinite(x) ? x : null;
}
