//! Reading a slotted class's fields where they live: the batch encoder reads 19 fields of every
//! `GovernanceEvent` (a `slots=True` dataclass), and `getattr` by name (type lookup, descriptor
//! call, reference) was a tenth of the producer's batch step (docs/native.md).
//!
//! A slot's place in the instance is the `offset` of the `PyMemberDef` behind its member
//! descriptor. The stable ABI does not show the descriptor's layout, so it is declared here and
//! checked for every field before use: the descriptor must be a `member_descriptor` of the class
//! itself whose member is named as the field and holds an object (`Py_T_OBJECT_EX`). Anything
//! else (another layout, a property, a subclass) keeps `getattr`.

use std::ffi::CStr;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyType;

/// CPython's `PyMemberDescrObject` (Include/cpython/descrobject.h, unchanged since 3.3).
#[repr(C)]
struct MemberDescr {
    ob_base: ffi::PyObject,
    d_type: *mut ffi::PyTypeObject,
    d_name: *mut ffi::PyObject,
    d_qualname: *mut ffi::PyObject,
    d_member: *mut ffi::PyMemberDef,
}

/// Where each of `N` named fields lives in instances of exactly one class (held: a type's layout
/// never changes while it lives).
pub(crate) struct Slots<const N: usize> {
    cls: Py<PyType>,
    offsets: [isize; N],
}

impl<const N: usize> Slots<N> {
    /// The offsets of `names` in `cls`'s instances; None unless every one is a checked object slot
    /// of `cls` itself.
    pub(crate) fn of(cls: &Bound<'_, PyType>, names: &[&str; N]) -> PyResult<Option<Self>> {
        let mut offsets = [0isize; N];
        for (offset, name) in offsets.iter_mut().zip(names) {
            let Ok(descr) = cls.getattr(*name) else {
                return Ok(None);
            };
            if descr.get_type().name()?.to_str()? != "member_descriptor" {
                return Ok(None);
            }
            // SAFETY: `descr` is a live member_descriptor (checked by its type's name), whose C
            // layout is MemberDescr; the fields read are checked before the offset is trusted.
            let member = unsafe {
                let d = descr.as_ptr().cast::<MemberDescr>();
                if (*d).d_type != cls.as_ptr().cast() || (*d).d_member.is_null() {
                    return Ok(None);
                }
                &*(*d).d_member
            };
            // SAFETY: a member with a non-null name has a NUL-terminated one.
            if member.name.is_null()
                || unsafe { CStr::from_ptr(member.name) }.to_bytes() != name.as_bytes()
            {
                return Ok(None);
            }
            if member.type_code != ffi::Py_T_OBJECT_EX || member.offset <= 0 {
                return Ok(None);
            }
            *offset = member.offset;
        }
        Ok(Some(Slots {
            cls: cls.clone().unbind(),
            offsets,
        }))
    }

    /// True if `obj`'s class is exactly the one the offsets were read from.
    pub(crate) fn fit(&self, obj: &Bound<'_, PyAny>) -> bool {
        obj.get_type().is(&self.cls)
    }

    /// Field `i` of `obj` (which [`Slots::fit`]); None if the slot is empty (never set).
    pub(crate) fn get<'py>(&self, obj: &Bound<'py, PyAny>, i: usize) -> Option<Bound<'py, PyAny>> {
        // SAFETY: `obj` is an instance of exactly `cls`, whose member at this offset is an object
        // slot (checked in `of`): a pointer-sized cell holding a strong reference or NULL.
        unsafe {
            let cell = obj
                .as_ptr()
                .cast::<u8>()
                .offset(self.offsets[i])
                .cast::<*mut ffi::PyObject>();
            let value = *cell;
            if value.is_null() {
                None
            } else {
                Some(Bound::from_borrowed_ptr(obj.py(), value))
            }
        }
    }
}

/// The index of `name` in `names` (at compile time: an unknown name fails the build).
pub(crate) const fn index_of<const N: usize>(names: &[&str; N], name: &str) -> usize {
    let mut i = 0;
    while i < N {
        let (a, b) = (names[i].as_bytes(), name.as_bytes());
        if a.len() == b.len() {
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return i;
            }
        }
        i += 1;
    }
    panic!("not a listed field")
}
