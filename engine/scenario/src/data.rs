//! The real market data shipped in the repository's `data/sp500/` directory
//! (see `data/README.md` for provenance and quirks), and loaders for it.
//!
//! Every loader exists in two forms: one reading a file (or a directory), and
//! one reading bytes. The bytes of the shipped files are embedded in the
//! binary ([`PRICES_GZ`], [`SECTORS_CSV`], [`DOLLAR_VOLUME_CSV`]), so the demo
//! works from any working directory; [`MarketData::embedded`] loads them all.
//!
//! Parsing is by hand (the files are simple CSV) and strict: a malformed row
//! is an error naming the file and the line, never a silently skipped row.

use chrono::NaiveDate;
use flate2::read::GzDecoder;
use overlay_core::ids::SecurityId;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::str::FromStr;

/// File name of the wide daily-close table (date × ticker).
pub const PRICES_FILE: &str = "sp500_close_wide_2013-2015.csv.gz";
/// File name of the ticker → GICS sector map.
pub const SECTORS_FILE: &str = "sectors_for_all_stocks_5yr.csv";
/// File name of the derived average dollar volume (the market-cap proxy).
pub const DOLLAR_VOLUME_FILE: &str = "avg_dollar_volume_2013.csv";

/// `data/sp500/sp500_close_wide_2013-2015.csv.gz`, embedded.
pub const PRICES_GZ: &[u8] = include_bytes!("../../../data/sp500/sp500_close_wide_2013-2015.csv.gz");
/// `data/sp500/sectors_for_all_stocks_5yr.csv`, embedded.
pub const SECTORS_CSV: &[u8] = include_bytes!("../../../data/sp500/sectors_for_all_stocks_5yr.csv");
/// `data/sp500/avg_dollar_volume_2013.csv`, embedded.
pub const DOLLAR_VOLUME_CSV: &[u8] = include_bytes!("../../../data/sp500/avg_dollar_volume_2013.csv");

/// Why a data file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: {message}")]
    Malformed { file: String, line: usize, message: String },
}

fn malformed(file: &str, line: usize, message: impl Into<String>) -> DataError {
    DataError::Malformed { file: file.to_string(), line, message: message.into() }
}

/// Daily closes, one row per trading day, one column per ticker.
///
/// `closes[d][t]` is the close of `tickers[t]` on `dates[d]`; `None` where the
/// source has no price (before an IPO or spin-off, after a delisting, or a
/// missing day). Dates are strictly increasing; tickers are unique.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PricePanel {
    pub dates: Vec<NaiveDate>,
    pub tickers: Vec<SecurityId>,
    pub closes: Vec<Vec<Option<Decimal>>>,
}

impl PricePanel {
    /// Reads the wide layout: a header `date,T1,T2,...` then one row per day
    /// `YYYY-MM-DD,close1,close2,...`; an empty cell means no price. Prices
    /// must be positive decimals. `source` names the input in errors.
    pub fn from_csv_reader<R: BufRead>(reader: R, source: &str) -> Result<Self, DataError> {
        let mut lines = numbered_lines(reader, source);
        let (line_no, header) = match lines.next() {
            Some(r) => r?,
            None => return Err(malformed(source, 1, "empty file: expected a header `date,TICKER,...`")),
        };
        let header = split_csv_line(&header).map_err(|m| malformed(source, line_no, m))?;
        if header.first().map(|h| h.trim()) != Some("date") {
            return Err(malformed(source, line_no, "the first header column must be `date`"));
        }
        let mut tickers = Vec::with_capacity(header.len() - 1);
        let mut seen = BTreeSet::new();
        for name in &header[1..] {
            let name = name.trim();
            check_ticker(name).map_err(|m| malformed(source, line_no, m))?;
            if !seen.insert(name.to_string()) {
                return Err(malformed(source, line_no, format!("ticker {name} appears twice in the header")));
            }
            tickers.push(SecurityId::new(name));
        }
        if tickers.is_empty() {
            return Err(malformed(source, line_no, "the header names no tickers"));
        }

        let mut dates: Vec<NaiveDate> = Vec::new();
        let mut closes = Vec::new();
        for item in lines {
            let (line_no, line) = item?;
            if line.trim().is_empty() {
                continue;
            }
            let mut fields = line.split(',');
            let date_field = fields.next().unwrap_or_default();
            let date = parse_date(date_field).map_err(|m| malformed(source, line_no, m))?;
            if let Some(prev) = dates.last() {
                if date <= *prev {
                    return Err(malformed(
                        source,
                        line_no,
                        format!("date {date} does not come after the previous row's {prev}"),
                    ));
                }
            }
            let mut row = Vec::with_capacity(tickers.len());
            for (i, cell) in fields.enumerate() {
                if i >= tickers.len() {
                    return Err(malformed(
                        source,
                        line_no,
                        format!("more cells than the header's {} tickers", tickers.len()),
                    ));
                }
                let cell = cell.trim();
                if cell.is_empty() {
                    row.push(None);
                    continue;
                }
                let price = Decimal::from_str(cell).map_err(|_| {
                    malformed(source, line_no, format!("close of {} is not a decimal: {cell:?}", tickers[i]))
                })?;
                if price <= Decimal::ZERO {
                    return Err(malformed(
                        source,
                        line_no,
                        format!("close of {} must be positive, got {cell}", tickers[i]),
                    ));
                }
                row.push(Some(price));
            }
            if row.len() != tickers.len() {
                return Err(malformed(
                    source,
                    line_no,
                    format!("{} cells after the date, the header has {} tickers", row.len(), tickers.len()),
                ));
            }
            dates.push(date);
            closes.push(row);
        }
        if dates.is_empty() {
            return Err(malformed(source, 2, "no price rows after the header"));
        }
        Ok(Self { dates, tickers, closes })
    }

    /// Reads the wide layout from bytes, gzip-compressed or not (detected by
    /// the gzip magic number).
    pub fn from_bytes(bytes: &[u8], source: &str) -> Result<Self, DataError> {
        Self::from_csv_reader(BufReader::new(maybe_gunzip(bytes)), source)
    }

    /// Reads a file in the wide layout, gzip-compressed or not.
    pub fn load(path: &Path) -> Result<Self, DataError> {
        let bytes = read_file(path)?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// The shipped S&P 500 panel, 2013-02-08 .. 2015-12-31.
    pub fn embedded() -> Result<Self, DataError> {
        Self::from_bytes(PRICES_GZ, PRICES_FILE)
    }

    /// Index of `date`, if it is a trading day of the panel.
    pub fn date_index(&self, date: NaiveDate) -> Option<usize> {
        self.dates.binary_search(&date).ok()
    }

    /// Index of the first trading day on or after `date`.
    pub fn first_on_or_after(&self, date: NaiveDate) -> Option<usize> {
        let i = self.dates.partition_point(|d| *d < date);
        (i < self.dates.len()).then_some(i)
    }

    /// Column of `ticker` (a linear scan; build a map for repeated lookups).
    pub fn ticker_index(&self, ticker: &str) -> Option<usize> {
        self.tickers.iter().position(|t| t.as_str() == ticker)
    }

    /// Close of column `ticker` on row `day`.
    pub fn close(&self, day: usize, ticker: usize) -> Option<Decimal> {
        self.closes.get(day).and_then(|row| row.get(ticker)).copied().flatten()
    }

    /// Close of `ticker` on `date`.
    pub fn close_on(&self, date: NaiveDate, ticker: &str) -> Option<Decimal> {
        self.close(self.date_index(date)?, self.ticker_index(ticker)?)
    }
}

/// Name and GICS classification of one ticker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SectorInfo {
    pub name: String,
    pub sector: String,
    /// Empty where the source has none.
    pub sub_industry: String,
}

/// Ticker → name, sector, sub-industry.
pub type SectorMap = BTreeMap<SecurityId, SectorInfo>;

/// Reads `sectors_for_all_stocks_5yr.csv` (columns located by header name:
/// `ticker`, `name`, `gics_sector`, `gics_sub_industry`; others ignored).
pub fn parse_sectors<R: BufRead>(reader: R, source: &str) -> Result<SectorMap, DataError> {
    let mut lines = numbered_lines(reader, source);
    let (line_no, header) = match lines.next() {
        Some(r) => r?,
        None => return Err(malformed(source, 1, "empty file: expected a header")),
    };
    let header = split_csv_line(&header).map_err(|m| malformed(source, line_no, m))?;
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| malformed(source, line_no, format!("header lacks column `{name}`")))
    };
    let (c_ticker, c_name, c_sector, c_sub) =
        (col("ticker")?, col("name")?, col("gics_sector")?, col("gics_sub_industry")?);
    let width = header.len();
    let mut map = SectorMap::new();
    for item in lines {
        let (line_no, line) = item?;
        if line.trim().is_empty() {
            continue;
        }
        let fields = split_csv_line(&line).map_err(|m| malformed(source, line_no, m))?;
        if fields.len() != width {
            return Err(malformed(source, line_no, format!("{} fields, the header has {width}", fields.len())));
        }
        let ticker = fields[c_ticker].trim();
        check_ticker(ticker).map_err(|m| malformed(source, line_no, m))?;
        let sector = fields[c_sector].trim();
        if sector.is_empty() {
            return Err(malformed(source, line_no, format!("{ticker} has no gics_sector")));
        }
        let info = SectorInfo {
            name: fields[c_name].trim().to_string(),
            sector: sector.to_string(),
            sub_industry: fields[c_sub].trim().to_string(),
        };
        if map.insert(SecurityId::new(ticker), info).is_some() {
            return Err(malformed(source, line_no, format!("ticker {ticker} appears twice")));
        }
    }
    Ok(map)
}

/// Reads a sector map file.
pub fn load_sectors(path: &Path) -> Result<SectorMap, DataError> {
    let bytes = read_file(path)?;
    parse_sectors(BufReader::new(maybe_gunzip(&bytes)), &path.display().to_string())
}

/// The shipped sector map (505 tickers).
pub fn embedded_sectors() -> Result<SectorMap, DataError> {
    parse_sectors(SECTORS_CSV, SECTORS_FILE)
}

/// One row of `avg_dollar_volume_2013.csv`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DollarVolume {
    /// Mean of close × volume over the window, whole US dollars.
    pub avg_dollar_volume: Decimal,
    /// Trading days in the window (60, fewer for a ticker with a short history).
    pub days: u32,
    pub first_date: NaiveDate,
    pub last_date: NaiveDate,
}

/// Ticker → average dollar volume: the market-capitalisation proxy.
pub type DollarVolumeMap = BTreeMap<SecurityId, DollarVolume>;

/// Reads `avg_dollar_volume_2013.csv`
/// (`ticker,avg_dollar_volume,days,first_date,last_date`).
pub fn parse_dollar_volume<R: BufRead>(reader: R, source: &str) -> Result<DollarVolumeMap, DataError> {
    let mut lines = numbered_lines(reader, source);
    let (line_no, header) = match lines.next() {
        Some(r) => r?,
        None => return Err(malformed(source, 1, "empty file: expected a header")),
    };
    const HEADER: [&str; 5] = ["ticker", "avg_dollar_volume", "days", "first_date", "last_date"];
    let got: Vec<&str> = header.split(',').map(str::trim).collect();
    if got != HEADER {
        return Err(malformed(source, line_no, format!("header must be `{}`", HEADER.join(","))));
    }
    let mut map = DollarVolumeMap::new();
    for item in lines {
        let (line_no, line) = item?;
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() != HEADER.len() {
            return Err(malformed(source, line_no, format!("{} fields, expected {}", f.len(), HEADER.len())));
        }
        check_ticker(f[0]).map_err(|m| malformed(source, line_no, m))?;
        let avg = Decimal::from_str(f[1]).ok().filter(|v| *v > Decimal::ZERO).ok_or_else(|| {
            malformed(source, line_no, format!("avg_dollar_volume {:?} is not a positive decimal", f[1]))
        })?;
        let days = f[2]
            .parse::<u32>()
            .ok()
            .filter(|d| *d > 0)
            .ok_or_else(|| malformed(source, line_no, format!("days {:?} is not a positive integer", f[2])))?;
        let first_date = parse_date(f[3]).map_err(|m| malformed(source, line_no, m))?;
        let last_date = parse_date(f[4]).map_err(|m| malformed(source, line_no, m))?;
        if last_date < first_date {
            return Err(malformed(source, line_no, "last_date is before first_date"));
        }
        let row = DollarVolume { avg_dollar_volume: avg, days, first_date, last_date };
        if map.insert(SecurityId::new(f[0]), row).is_some() {
            return Err(malformed(source, line_no, format!("ticker {} appears twice", f[0])));
        }
    }
    Ok(map)
}

/// Reads a dollar-volume file.
pub fn load_dollar_volume(path: &Path) -> Result<DollarVolumeMap, DataError> {
    let bytes = read_file(path)?;
    parse_dollar_volume(BufReader::new(maybe_gunzip(&bytes)), &path.display().to_string())
}

/// The shipped dollar-volume proxy (495 tickers).
pub fn embedded_dollar_volume() -> Result<DollarVolumeMap, DataError> {
    parse_dollar_volume(DOLLAR_VOLUME_CSV, DOLLAR_VOLUME_FILE)
}

/// Everything a scenario generator reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarketData {
    pub prices: PricePanel,
    pub sectors: SectorMap,
    pub dollar_volume: DollarVolumeMap,
}

impl MarketData {
    /// The three shipped files, from the bytes embedded in the binary.
    pub fn embedded() -> Result<Self, DataError> {
        Ok(Self {
            prices: PricePanel::embedded()?,
            sectors: embedded_sectors()?,
            dollar_volume: embedded_dollar_volume()?,
        })
    }

    /// The three files from a directory laid out like `data/sp500/`
    /// ([`PRICES_FILE`], [`SECTORS_FILE`], [`DOLLAR_VOLUME_FILE`]).
    pub fn load_dir(dir: &Path) -> Result<Self, DataError> {
        Ok(Self {
            prices: PricePanel::load(&dir.join(PRICES_FILE))?,
            sectors: load_sectors(&dir.join(SECTORS_FILE))?,
            dollar_volume: load_dollar_volume(&dir.join(DOLLAR_VOLUME_FILE))?,
        })
    }

    /// The same reference data with another price panel (a `--prices FILE`).
    /// Tickers missing from the sector map are classified "Unclassified";
    /// tickers missing from the dollar-volume map get the median proxy.
    pub fn with_prices(self, prices: PricePanel) -> Self {
        Self { prices, ..self }
    }
}

// ---------------------------------------------------------------------------
// Helpers

fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|source| DataError::Io { file: path.display().to_string(), source })
}

fn maybe_gunzip(bytes: &[u8]) -> Box<dyn Read + '_> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(GzDecoder::new(bytes))
    } else {
        Box::new(bytes)
    }
}

/// Lines with 1-based numbers, without the line ending (LF or CRLF).
fn numbered_lines<'a, R: BufRead + 'a>(
    reader: R,
    source: &'a str,
) -> impl Iterator<Item = Result<(usize, String), DataError>> + 'a {
    reader.lines().enumerate().map(move |(i, line)| match line {
        Ok(mut s) => {
            if s.ends_with('\r') {
                s.pop();
            }
            Ok((i + 1, s))
        }
        Err(source_err) => Err(DataError::Io { file: format!("{source} (line {})", i + 1), source: source_err }),
    })
}

fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|_| format!("{s:?} is not a date (YYYY-MM-DD)"))
}

fn check_ticker(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("empty ticker".into());
    }
    if t.len() > overlay_core::event::ID_LEN_MAX || t.chars().any(|c| c.is_control() || c == '/' || c == '"') {
        return Err(format!("{t:?} is not a usable ticker"));
    }
    Ok(())
}

/// Splits one CSV line (RFC 4180 quoting, no line breaks inside fields).
fn split_csv_line(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut at_field_start = true;
    loop {
        match chars.next() {
            None => {
                fields.push(std::mem::take(&mut field));
                return Ok(fields);
            }
            Some('"') if at_field_start => {
                at_field_start = false;
                loop {
                    match chars.next() {
                        None => return Err("unterminated quoted field".into()),
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(c) => field.push(c),
                    }
                }
                match chars.peek() {
                    None | Some(',') => {}
                    Some(c) => return Err(format!("unexpected {c:?} after a closing quote")),
                }
            }
            Some(',') => {
                fields.push(std::mem::take(&mut field));
                at_field_start = true;
            }
            Some(c) => {
                at_field_start = false;
                field.push(c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn csv_split_handles_quotes() {
        assert_eq!(split_csv_line("a,\"b, c\",d").unwrap(), vec!["a", "b, c", "d"]);
        assert_eq!(split_csv_line("\"x\"\"y\",").unwrap(), vec!["x\"y", ""]);
        assert!(split_csv_line("\"open").is_err());
        assert!(split_csv_line("\"a\"b").is_err());
    }

    #[test]
    fn embedded_prices_load() {
        let p = PricePanel::embedded().unwrap();
        assert_eq!(p.tickers.len(), 505);
        assert_eq!(p.dates.first(), Some(&date("2013-02-08")));
        assert_eq!(p.dates.last(), Some(&date("2015-12-31")));
        assert_eq!(p.dates.len(), 730);
        assert!(p.closes.iter().all(|r| r.len() == 505));
        assert_eq!(p.close_on(date("2013-02-08"), "AAPL"), Some(Decimal::new(678_542, 4)));
        assert_eq!(p.close_on(date("2013-02-08"), "GOOG"), None, "GOOG starts 2014-03-27");
        assert_eq!(p.first_on_or_after(date("2015-01-01")).map(|i| p.dates[i]), Some(date("2015-01-02")));
        assert_eq!(p.first_on_or_after(date("2016-01-01")), None);
    }

    #[test]
    fn embedded_sectors_and_dollar_volume_load() {
        let s = embedded_sectors().unwrap();
        assert_eq!(s.len(), 505);
        let adi = &s[&SecurityId::new("ADI")];
        assert_eq!(adi.name, "Analog Devices, Inc.");
        assert_eq!(adi.sector, "Information Technology");
        assert_eq!(s[&SecurityId::new("ANDV")].sub_industry, "");
        let dv = embedded_dollar_volume().unwrap();
        assert_eq!(dv.len(), 495);
        let aapl = &dv[&SecurityId::new("AAPL")];
        assert_eq!(aapl.days, 60);
        assert_eq!(aapl.first_date, date("2013-02-08"));
        assert!(aapl.avg_dollar_volume > Decimal::new(1_000_000_000, 0));
        assert!(dv.keys().all(|t| s.contains_key(t)), "every priced ticker has a sector");
    }

    #[test]
    fn load_dir_matches_embedded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/sp500");
        assert_eq!(MarketData::load_dir(&dir).unwrap(), MarketData::embedded().unwrap());
    }

    #[test]
    fn malformed_rows_name_file_and_line() {
        let csv = "date,A,B\n2015-01-02,1.5,\n2015-01-05,1.6,abc\n";
        let e = PricePanel::from_csv_reader(csv.as_bytes(), "p.csv").unwrap_err();
        assert_eq!(e.to_string(), "p.csv:3: close of B is not a decimal: \"abc\"");
        let e = PricePanel::from_csv_reader("date,A\n2015-01-02,1,2\n".as_bytes(), "p.csv").unwrap_err();
        assert!(e.to_string().starts_with("p.csv:2: more cells"), "{e}");
        let e = PricePanel::from_csv_reader("date,A\n2015-01-05,1\n2015-01-02,1\n".as_bytes(), "p.csv").unwrap_err();
        assert!(e.to_string().starts_with("p.csv:3: date 2015-01-02 does not come after"), "{e}");
        let e = PricePanel::from_csv_reader("date,A\n2015-01-05,0\n".as_bytes(), "p.csv").unwrap_err();
        assert!(e.to_string().contains("must be positive"), "{e}");
        let e = PricePanel::from_csv_reader("day,A\n".as_bytes(), "p.csv").unwrap_err();
        assert!(e.to_string().starts_with("p.csv:1:"), "{e}");
        let e = parse_dollar_volume(
            "ticker,avg_dollar_volume,days,first_date,last_date\nA,-1,60,2013-02-08,2013-05-06\n".as_bytes(),
            "dv.csv",
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("dv.csv:2:"), "{e}");
        let e =
            parse_sectors("ticker,name,gics_sector,gics_sub_industry\nA,\"x,1,,\n".as_bytes(), "s.csv").unwrap_err();
        assert!(e.to_string().starts_with("s.csv:2:"), "{e}");
    }

    #[test]
    fn plain_and_gzip_bytes_agree() {
        use flate2::{write::GzEncoder, Compression};
        use std::io::Write;
        let csv = "date,A,B\r\n2015-01-02,1.5,\r\n2015-01-05,1.6,2\r\n";
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(csv.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        let a = PricePanel::from_bytes(csv.as_bytes(), "plain").unwrap();
        let b = PricePanel::from_bytes(&gz, "gz").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.closes[0], vec![Some(Decimal::new(15, 1)), None]);
    }
}
