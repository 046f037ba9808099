//! What the heap census found, as the collector hands it over: series and facts made by
//! `python::census` (judged and ranked by `report::census`; the renderers never see them).

pub use crate::python::census::{
    CensusFacts, ContainerFacts, Holds, TaskFacts, TasksFacts, TypeFacts,
};
