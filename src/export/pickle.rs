//! A Python pickle (protocol 4) of dicts, lists, strings, numbers and numpy arrays, written the
//! way numpy pickles an array (`numpy.core.multiarray._reconstruct` and the array's state), so
//! that `pickle.load` in a researcher's Python gives numpy arrays without this tool installed.

/// The values MMSA's feature pickles hold.
pub enum Py {
    Dict(Vec<(String, Py)>),
    List(Vec<Py>),
    Str(String),
    Int(i64),
    /// A numpy array: dtype (`<f4`, `<i8`), shape, little-endian bytes.
    Array(&'static str, Vec<usize>, Vec<u8>),
}

pub fn f32_array(shape: Vec<usize>, values: &[f32]) -> Py {
    Py::Array(
        "f4",
        shape,
        values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

/// The pickle's bytes.
pub fn dumps(v: &Py) -> Vec<u8> {
    let mut out = vec![0x80, 4];
    write(v, &mut out);
    out.push(b'.');
    out
}

fn str_op(s: &str, out: &mut Vec<u8>) {
    out.push(b'X');
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn int_op(n: i64, out: &mut Vec<u8>) {
    match i32::try_from(n) {
        Ok(k) => {
            out.push(b'J');
            out.extend_from_slice(&k.to_le_bytes());
        }
        // LONG1: a little-endian two's complement of 8 bytes.
        Err(_) => {
            out.extend_from_slice(&[0x8a, 8]);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

fn global(module: &str, name: &str, out: &mut Vec<u8>) {
    out.push(b'c');
    out.extend_from_slice(module.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
}

fn write(v: &Py, out: &mut Vec<u8>) {
    match v {
        Py::Dict(items) => {
            out.push(b'}');
            if !items.is_empty() {
                out.push(b'(');
                for (k, x) in items {
                    str_op(k, out);
                    write(x, out);
                }
                out.push(b'u');
            }
        }
        Py::List(items) => {
            out.push(b']');
            if !items.is_empty() {
                out.push(b'(');
                for x in items {
                    write(x, out);
                }
                out.push(b'e');
            }
        }
        Py::Str(s) => str_op(s, out),
        Py::Int(n) => int_op(*n, out),
        Py::Array(dtype, shape, data) => array(dtype, shape, data, out),
    }
}

/// `_reconstruct(ndarray, (0,), b'b')`, then its state
/// `(1, shape, dtype(kind, False, True) + (3, '<', None, None, None, -1, -1, 0), False, data)`.
fn array(dtype: &str, shape: &[usize], data: &[u8], out: &mut Vec<u8>) {
    global("numpy.core.multiarray", "_reconstruct", out);
    global("numpy", "ndarray", out);
    out.extend_from_slice(&[b'K', 0, 0x85]); // (0,)
    out.extend_from_slice(&[b'C', 1, b'b']); // b'b'
    out.extend_from_slice(&[0x87, b'R']);
    out.push(b'(');
    out.extend_from_slice(&[b'K', 1]);
    out.push(b'(');
    for d in shape {
        int_op(*d as i64, out);
    }
    out.push(b't');
    global("numpy", "dtype", out);
    str_op(dtype, out);
    out.extend_from_slice(&[0x89, 0x88, 0x87, b'R']); // (kind, False, True)
    out.push(b'(');
    out.extend_from_slice(&[b'K', 3]);
    str_op("<", out);
    out.extend_from_slice(b"NNN");
    int_op(-1, out);
    int_op(-1, out);
    out.extend_from_slice(&[b'K', 0]);
    out.push(b't');
    out.push(b'b');
    out.push(0x89); // not Fortran order
    match u32::try_from(data.len()) {
        Ok(n) => {
            out.push(b'B');
            out.extend_from_slice(&n.to_le_bytes());
        }
        Err(_) => {
            out.push(0x8e); // BINBYTES8
            out.extend_from_slice(&(data.len() as u64).to_le_bytes());
        }
    }
    out.extend_from_slice(data);
    out.push(b't');
    out.push(b'b');
}
