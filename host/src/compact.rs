//! Compacts the data segments of a pre-initialised snapshot.
//!
//! wasmtime-wizer writes a snapshot's memory as one active data segment per run of non-zero
//! bytes (runs closer than 4 bytes merged, at most 10,000 segments). The policy component's
//! snapshot is ~0.9 MB in 10,000 such segments, and with copy-in initialisation (app.rs) every
//! request's instance applies them one by one: ~7 % of the host's time at saturation went to
//! that loop alone (BENCHMARKS.md, session 5). Joining the segments of a snapshot that lie
//! within a page of each other (the gap filled with zeros, which is what memory holds there
//! anyway) leaves a handful of segments over the same pages, so each instance does a few large
//! copies instead.
//!
//! Only the snapshot's own segments are joined: the trailing run of active segments at
//! constant offsets, non-overlapping, of one memory (where wizer appends them; code cannot
//! refer to their indices). Everything else in the binary is copied as it is; a module whose
//! segments do not look like that is left alone.

use anyhow::{bail, Context, Result};
use wasm_encoder::{ConstExpr, DataCountSection, DataSection, RawSection, Section};
use wasmparser::{BinaryReader, DataKind, DataSectionReader, Operator};

/// Segments closer than this are joined.
const JOIN_GAP: u64 = 4096;

const SECTION_DATA: u8 = 11;
const SECTION_DATA_COUNT: u8 = 12;
/// Component-level sections holding a core module / a nested component.
const SECTION_CORE_MODULE: u8 = 1;
const SECTION_COMPONENT: u8 = 4;

/// `wasm` (a component) with the data segments of each core module compacted.
pub fn component(wasm: &[u8]) -> Result<Vec<u8>> {
    let binary = Binary::parse(wasm)?;
    let mut out = binary.header.to_vec();
    for (id, payload) in binary.sections {
        let rewritten = match id {
            SECTION_CORE_MODULE => module(payload)?,
            SECTION_COMPONENT => component(payload)?,
            _ => payload.to_vec(),
        };
        RawSection {
            id,
            data: &rewritten,
        }
        .append_to(&mut out);
    }
    Ok(out)
}

/// A core module with its trailing constant active segments joined.
pub fn module(wasm: &[u8]) -> Result<Vec<u8>> {
    let binary = Binary::parse(wasm)?;
    let data = binary.sections.iter().find(|(id, _)| *id == SECTION_DATA);
    let Some(joined) = data
        .map(|(_, payload)| joined(payload))
        .transpose()?
        .flatten()
    else {
        return Ok(wasm.to_vec());
    };
    let mut out = binary.header.to_vec();
    for (id, data) in binary.sections {
        match id {
            SECTION_DATA => joined.append_to(&mut out),
            SECTION_DATA_COUNT => DataCountSection {
                count: joined.len(),
            }
            .append_to(&mut out),
            _ => RawSection { id, data }.append_to(&mut out),
        }
    }
    Ok(out)
}

/// A wasm binary (module or component): its 8-byte header and its sections (id, payload), in
/// order.
struct Binary<'a> {
    header: &'a [u8],
    sections: Vec<(u8, &'a [u8])>,
}

impl<'a> Binary<'a> {
    fn parse(wasm: &'a [u8]) -> Result<Binary<'a>> {
        let mut reader = BinaryReader::new(wasm, 0);
        let header = reader.read_bytes(8).context("not a wasm binary")?;
        if &header[..4] != b"\0asm" {
            bail!("not a wasm binary");
        }
        let mut sections = Vec::new();
        while !reader.eof() {
            let id = reader.read_u8()?;
            let size = reader.read_var_u32()? as usize;
            sections.push((id, reader.read_bytes(size)?));
        }
        Ok(Binary { header, sections })
    }
}

/// One active segment of the trailing run.
struct Segment {
    offset: u64,
    bytes: Vec<u8>,
}

/// The data section with the trailing run joined; `None` when nothing would change.
fn joined(payload: &[u8]) -> Result<Option<DataSection>> {
    let reader = DataSectionReader::new(BinaryReader::new(payload, 0))?;
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut memory = None;
    let mut run: Vec<Segment> = Vec::new();
    for data in reader {
        let data = data?;
        let constant = match &data.kind {
            DataKind::Active {
                memory_index,
                offset_expr,
            } => constant_offset(offset_expr)?.map(|o| (*memory_index, o)),
            DataKind::Passive => None,
        };
        match constant {
            // All of the run in one memory, or not a snapshot's layout.
            Some((m, _)) if *memory.get_or_insert(m) != m => return Ok(None),
            Some((_, offset)) => run.push(Segment {
                offset,
                bytes: data.data.to_vec(),
            }),
            // Constant segments before another one: not a snapshot's layout.
            None if !run.is_empty() => return Ok(None),
            None => kept.push(&payload[data.range.clone()]),
        }
    }
    let Some(memory) = memory else {
        return Ok(None);
    };
    let segments = run.len();
    run.sort_by_key(|s| s.offset);
    let mut merged: Vec<Segment> = Vec::new();
    for s in run {
        match merged.last_mut() {
            Some(last) if s.offset < last.offset + last.bytes.len() as u64 => {
                // Overlapping segments: their order matters; leave the module alone.
                return Ok(None);
            }
            Some(last) if s.offset - (last.offset + last.bytes.len() as u64) <= JOIN_GAP => {
                let gap = (s.offset - last.offset) as usize - last.bytes.len();
                last.bytes.resize(last.bytes.len() + gap, 0);
                last.bytes.extend_from_slice(&s.bytes);
            }
            _ => merged.push(s),
        }
    }
    if merged.len() == segments {
        return Ok(None);
    }
    let mut section = DataSection::new();
    for k in kept {
        section.raw(k);
    }
    for s in merged {
        let offset = i32::try_from(s.offset).context("segment offset beyond 32 bits")?;
        section.active(memory, &ConstExpr::i32_const(offset), s.bytes);
    }
    Ok(Some(section))
}

/// The offset of an `i32.const N end` expression; `None` for any other expression.
fn constant_offset(expr: &wasmparser::ConstExpr<'_>) -> Result<Option<u64>> {
    let mut ops = expr.get_operators_reader();
    let first = ops.read()?;
    let second = ops.read()?;
    match (first, second, ops.eof()) {
        (Operator::I32Const { value }, Operator::End, true) if value >= 0 => Ok(Some(value as u64)),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_encoder::{
        CodeSection, ExportKind, ExportSection, Function, FunctionSection, MemorySection,
        MemoryType, Module, TypeSection,
    };
    use wasmtime::{Engine, Instance, Store};

    /// A module with one memory (2 pages), a passive segment, the given active segments, and
    /// an exported function that uses the passive segment (so its index must stay).
    fn module_with(segments: &[(u32, &[u8])]) -> Vec<u8> {
        let mut m = Module::new();
        let mut types = TypeSection::new();
        types.ty().function([], []);
        m.section(&types);
        let mut funcs = FunctionSection::new();
        funcs.function(0);
        m.section(&funcs);
        let mut mem = MemorySection::new();
        mem.memory(MemoryType {
            minimum: 2,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        m.section(&mem);
        let mut exports = ExportSection::new();
        exports.export("memory", ExportKind::Memory, 0);
        exports.export("init", ExportKind::Func, 0);
        m.section(&exports);
        m.section(&DataCountSection {
            count: 1 + segments.len() as u32,
        });
        let mut code = CodeSection::new();
        let mut f = Function::new([]);
        // memory.init of the passive segment 0 at 65000, 3 bytes.
        f.instructions()
            .i32_const(65000)
            .i32_const(0)
            .i32_const(3)
            .memory_init(0, 0)
            .end();
        code.function(&f);
        m.section(&code);
        let mut data = DataSection::new();
        data.passive(*b"xyz");
        for (offset, bytes) in segments {
            data.active(
                0,
                &ConstExpr::i32_const(*offset as i32),
                bytes.iter().copied(),
            );
        }
        m.section(&data);
        m.finish()
    }

    fn memory_after_init(wasm: &[u8]) -> Vec<u8> {
        let engine = Engine::default();
        let module = wasmtime::Module::new(&engine, wasm).expect("valid module");
        let mut store = Store::new(&engine, ());
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        let init = instance
            .get_typed_func::<(), ()>(&mut store, "init")
            .unwrap();
        init.call(&mut store, ()).unwrap();
        let memory = instance.get_memory(&mut store, "memory").unwrap();
        memory.data(&store).to_vec()
    }

    fn segment_count(wasm: &[u8]) -> usize {
        let mut n = 0;
        for payload in wasmparser::Parser::new(0).parse_all(wasm) {
            if let wasmparser::Payload::DataSection(r) = payload.unwrap() {
                n = r.count() as usize;
            }
        }
        n
    }

    #[test]
    fn near_segments_are_joined_and_memory_is_the_same() {
        let far = [9u8; 5];
        let segments: Vec<(u32, &[u8])> = vec![
            (4000, b"later"),
            (100, b"abc"),
            (110, b"def"),
            (110 + 3 + 4096, b"ghi"),
            (100_000, &far),
        ];
        let wasm = module_with(&segments);
        let compacted = module(&wasm).unwrap();
        wasmparser::Validator::new()
            .validate_all(&compacted)
            .unwrap();
        // 100..4005 and 4209 join (gaps within a page); 100000 is beyond.
        assert_eq!(segment_count(&wasm), 6);
        assert_eq!(segment_count(&compacted), 3);
        assert_eq!(memory_after_init(&compacted), memory_after_init(&wasm));
        assert_eq!(&memory_after_init(&compacted)[65000..65003], b"xyz");
    }

    #[test]
    fn overlapping_or_lone_segments_are_left_alone() {
        let overlapping = module_with(&[(100, b"abcdef"), (102, b"XY")]);
        assert_eq!(module(&overlapping).unwrap(), overlapping);
        let lone = module_with(&[(100, b"abc")]);
        assert_eq!(module(&lone).unwrap(), lone);
    }

    #[test]
    fn not_wasm_is_an_error() {
        assert!(component(b"not wasm at all").is_err());
    }
}
