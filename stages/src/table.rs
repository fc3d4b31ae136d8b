//! Small helpers for building and reading Arrow tables, so stages stay about their own logic.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float32Array, Float64Array, Int64Array, ListArray, StringArray, UInt64Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;

use crate::StageError;

/// Builds a batch from named columns. Every field is nullable so that tables assembled from
/// items that happen to have or lack nulls share one schema.
pub fn batch(cols: Vec<(&str, ArrayRef)>) -> Result<RecordBatch, StageError> {
    let fields: Vec<Field> = cols
        .iter()
        .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
        .collect();
    let arrays = cols.into_iter().map(|(_, a)| a).collect();
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
}

pub fn strings<S: AsRef<str>>(v: &[S]) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(v.iter().map(|s| s.as_ref())))
}

pub fn opt_strings(v: Vec<Option<String>>) -> ArrayRef {
    Arc::new(StringArray::from(v))
}

pub fn f64s(v: Vec<Option<f64>>) -> ArrayRef {
    Arc::new(Float64Array::from(v))
}

pub fn i64s(v: Vec<Option<i64>>) -> ArrayRef {
    Arc::new(Int64Array::from(v))
}

/// One list per row, of any primitive or string array built from the rows' concatenation.
fn lists(lens: Vec<usize>, values: ArrayRef) -> ArrayRef {
    let field = Field::new("item", values.data_type().clone(), false);
    Arc::new(ListArray::new(
        Arc::new(field),
        OffsetBuffer::from_lengths(lens),
        values,
        None,
    ))
}

pub fn str_lists(rows: &[Vec<String>]) -> ArrayRef {
    let lens = rows.iter().map(Vec::len).collect();
    lists(lens, strings(&rows.concat()))
}

pub fn i64_lists(rows: &[Vec<i64>]) -> ArrayRef {
    let lens = rows.iter().map(Vec::len).collect();
    lists(lens, Arc::new(Int64Array::from(rows.concat())))
}

pub fn f64_lists(rows: &[Vec<f64>]) -> ArrayRef {
    let lens = rows.iter().map(Vec::len).collect();
    lists(lens, Arc::new(Float64Array::from(rows.concat())))
}

/// Row `r` of a list column as a typed array (empty when the row is null).
pub fn list_row<T: Array + Clone + 'static>(
    t: &RecordBatch,
    name: &str,
    r: usize,
) -> Result<T, StageError> {
    let l = col::<ListArray>(t, name)?;
    let v = l.value(r);
    v.as_any()
        .downcast_ref::<T>()
        .cloned()
        .ok_or_else(|| StageError::Input(format!("column `{name}` holds the wrong list type")))
}

pub fn u64s(v: Vec<u64>) -> ArrayRef {
    Arc::new(UInt64Array::from(v))
}

/// A typed view of one column, with an error that names the column when it is absent.
pub fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T, StageError> {
    let c = b
        .column_by_name(name)
        .ok_or_else(|| StageError::Input(format!("input has no column `{name}`")))?;
    c.as_any().downcast_ref::<T>().ok_or_else(|| {
        StageError::Input(format!(
            "column `{name}` has type {}, not the expected one",
            c.data_type()
        ))
    })
}

pub fn str_col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a StringArray, StageError> {
    col::<StringArray>(b, name)
}

pub fn f64_col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a Float64Array, StageError> {
    col::<Float64Array>(b, name)
}

pub fn opt_str(a: &StringArray, i: usize) -> Option<&str> {
    (!a.is_null(i)).then(|| a.value(i))
}

pub fn opt_f64(a: &Float64Array, i: usize) -> Option<f64> {
    (!a.is_null(i)).then(|| a.value(i))
}

/// The `start_s`..`end_s` segment of a clip inside a longer recording, when the clips table
/// has one for this row (IEMOCAP turns in a dialog video).
pub fn span(t: &RecordBatch, row: usize) -> Option<(f64, f64)> {
    let at = |c: &str| f64_col(t, c).ok().and_then(|a| opt_f64(a, row));
    Some((at("start_s")?, at("end_s")?))
}

/// An empty table with the given schema, for stages whose every item failed.
pub fn empty(fields: Vec<(&str, DataType)>) -> RecordBatch {
    let schema = Schema::new(
        fields
            .into_iter()
            .map(|(n, t)| Field::new(n, t, true))
            .collect::<Vec<_>>(),
    );
    RecordBatch::new_empty(Arc::new(schema))
}

/// One f32 list per row: the layout waveforms and flattened features are stored in.
pub fn f32_lists(rows: Vec<Vec<f32>>) -> ArrayRef {
    let lens: Vec<usize> = rows.iter().map(Vec::len).collect();
    let values = Float32Array::from(rows.concat());
    Arc::new(ListArray::new(
        Arc::new(Field::new("item", DataType::Float32, false)),
        OffsetBuffer::from_lengths(lens),
        Arc::new(values),
        None,
    ))
}
